// Model loading as real networks and real browsers behave: a server without Range support, a
// missing file, a gated model (403), a host the page's Content-Security-Policy does not allow,
// and a browser that lets the page store nothing. Each shows its own message, and a model
// already cached stays cached. No edit runs here (seconds per case). The app is served from
// dist/, the folder `scripts/build-web.sh --deploy` makes for static hosts (names stripped from
// the module): this is the test that the deployed files work.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, INSECURE_HOST, startServer, launch, openPage, screenshot } from './harness.mjs';

const TINY = path.join(ROOT, 'tests/fixtures/tiny-sd');
let server;
let browser;
const requests = [];

before(async () => {
  server = await startServer([
    { prefix: '/models/tiny-sd/', dir: TINY },
    { prefix: '/no-range/tiny-sd/', dir: TINY, ranges: false },
    { prefix: '/gated/tiny-sd/', dir: TINY, status: 403 },
  ], { deploy: true });
  browser = await launch({ webgpu: true });
  browser.context.on('request', (r) => requests.push(r.url()));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

const waitState = (page, states, timeout = 120_000) =>
  page.waitForFunction((s) => s.includes(document.getElementById('app').dataset.state), states, { timeout });

async function ready(page) {
  await waitState(page, ['ready', 'error']);
  assert.equal(await page.getAttribute('#app', 'data-state'), 'ready', await page.textContent('#error'));
}

async function load(page, url) {
  await page.check('input[name="source"][value="url"]');
  await page.fill('#model-url', url);
  await page.click('#load-model');
  await waitState(page, ['model-ready', 'model-error']);
  return page.getAttribute('#app', 'data-state');
}

test('each network failure has its own message and the cached model stays', { timeout: 600_000 }, async () => {
  const { page, log } = await openPage(browser.context, `${server.url}/`);
  await ready(page);
  assert.equal(await load(page, `${server.url}/models/tiny-sd/`), 'model-ready', await page.textContent('#error'));
  const port = new URL(server.url).port;
  const cases = [
    // The 8-byte header request gets the whole file: refused before reading the body.
    ['no Range support', `${server.url}/no-range/tiny-sd/`, /ignored the Range request/],
    ['404', `${server.url}/nowhere/`, /no unet\/config\.json \(no such file at http:\/\/127\.0\.0\.1:\d+\/nowhere\/unet\/config\.json\)/],
    ['403', `${server.url}/gated/tiny-sd/`, /answered 403: this model needs a Hugging Face token or is gated/],
    ['blocked by the CSP', `http://${INSECURE_HOST}:${port}/models/tiny-sd/`, /Content-Security-Policy does not allow http:\/\/gooddrag\.test:\d+: add it to connect-src/],
  ];
  for (const [name, url, message] of cases) {
    const mark = requests.length;
    assert.equal(await load(page, url), 'model-error', name);
    assert.match(await page.textContent('#error'), message, name);
    assert.match(await page.textContent('#cached-models'), /models\/tiny-sd/, `${name}: the cached model is still listed`);
    const sent = requests.slice(mark).filter((u) => u.startsWith(url));
    if (name === '403') assert.equal(sent.length, 1, `a 403 is not retried: ${sent}`);
    if (name === 'no Range support') {
      const weights = sent.filter((u) => u.endsWith('.safetensors'));
      assert.ok(weights.length >= 1 && new Set(weights).size === weights.length, `each weights file asked once, never retried: ${weights}`);
    }
  }
  await screenshot(page, 'network-csp-blocked');
  // Nothing was lost: the cached model loads again without a byte from the network.
  const mark = requests.length;
  assert.equal(await load(page, `${server.url}/models/tiny-sd/`), 'model-ready');
  assert.match(await page.textContent('#model-status'), /nothing downloaded/);
  assert.deepEqual(requests.slice(mark).filter((u) => u.endsWith('.safetensors')), []);
  assert.deepEqual(log.panics, []);
});

test('a browser that blocks site data loads the model uncached, with a warning', { timeout: 300_000 }, async () => {
  const blocked = await launch({ webgpu: true, blockSiteData: true });
  try {
    const { page, log } = await openPage(blocked.context, `${server.url}/`);
    await ready(page);
    assert.equal(await load(page, `${server.url}/models/tiny-sd/`), 'model-ready', await page.textContent('#error'));
    assert.match(await page.textContent('#model-warning'), /does not let the page store data/);
    assert.match(await page.textContent('#cached-models'), /none/);
    await screenshot(page, 'network-no-storage');
    assert.deepEqual(log.panics, []);
  } finally {
    await blocked.close();
  }
});
