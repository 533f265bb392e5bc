// Browser test harness: the app's own static server on 127.0.0.1, Debian's Chromium driven by
// playwright-core (headless, SwiftShader WebGPU — no GPU needed), console and request capture,
// and screenshots under test-output/screenshots/.

import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { appMounts, createStaticServer, listen } from '../../scripts/serve.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SCREENSHOTS = path.join(ROOT, 'test-output', 'screenshots');

const CHROMIUM = process.env.GOODDRAG_CHROMIUM ?? '/usr/bin/chromium';

// Without the background-networking flags Chromium keeps dialling out of a closed network.
const BASE_FLAGS = [
  '--no-sandbox',
  '--disable-gpu-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

// A real WebGPU adapter without a GPU: SwiftShader's Vulkan behind Dawn.
export const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu',
  '--enable-unsafe-swiftshader',
  '--use-webgpu-adapter=swiftshader',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
];

/** Starts the app server; returns `{ url, close }`. */
/**
 * Serves the app (www/ and pkg/, or with `deploy` the static-host folder dist/ that
 * `scripts/build-web.sh --deploy` writes) plus `extraMounts`.
 */
export async function startServer(extraMounts = [], { deploy = false } = {}) {
  const dist = path.join(ROOT, 'dist');
  if (deploy && !existsSync(path.join(dist, 'pkg', 'gooddrag_bg.wasm'))) {
    throw new Error('dist/ is missing: run scripts/build-web.sh --deploy first (scripts/test.sh does).');
  }
  const app = deploy ? [{ prefix: '/', dir: dist }, { prefix: '/pkg/', dir: path.join(dist, 'pkg') }] : appMounts(ROOT);
  const { server, url } = await listen(createStaticServer({ mounts: [...app, ...extraMounts] }));
  return { url, close: () => new Promise((r) => server.close(r)) };
}

/**
 * A host name that resolves to 127.0.0.1 inside the test browser but, unlike 127.0.0.1 itself,
 * is not a secure context over plain http — so the page sees no `navigator.gpu`, exactly as on
 * a site served without https. (Chromium 156 has no switch that removes the WebGPU API.)
 */
export const INSECURE_HOST = 'gooddrag.test';

/**
 * Launches headless Chromium with a fresh profile. `webgpu`: true gives a SwiftShader adapter;
 * false leaves WebGPU's unsafe switch off, so the API exists but offers no adapter.
 */
export async function launch({ webgpu = true, blockSiteData = false } = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), 'gooddrag-chromium-'));
  if (blockSiteData) {
    // The browser setting "Block sites from saving data" (content setting cookies = block),
    // which also denies IndexedDB, as private windows of some browsers do.
    mkdirSync(path.join(profile, 'Default'), { recursive: true });
    writeFileSync(path.join(profile, 'Default', 'Preferences'), JSON.stringify({ profile: { default_content_setting_values: { cookies: 2 } } }));
  }
  const args = [...BASE_FLAGS, `--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1`];
  if (webgpu) args.push(...WEBGPU_FLAGS);
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1100, height: 800 },
  });
  return {
    context: browser,
    close: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page and records console messages, page errors, and every requested URL.
 * Panics from the wasm core (console_error_panic_hook prints "panicked at") are collected
 * in `panics`: a browser test fails on any unless it asserts why it is harmless.
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  const log = { console: [], errors: [], requests: [], panics: [] };
  const onConsole = (m) => {
    const text = m.text();
    log.console.push(`${m.type()}: ${text}`);
    if (/panicked at/.test(text)) log.panics.push(text);
  };
  page.on('console', onConsole);
  page.on('pageerror', (e) => log.errors.push(String(e)));
  context.on('request', (r) => log.requests.push(r.url()));
  // Worker consoles (the engine runs in a worker) are not page consoles: subscribe to each.
  page.on('worker', (w) => w.on('console', onConsole));
  await page.goto(url);
  return { page, log };
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
