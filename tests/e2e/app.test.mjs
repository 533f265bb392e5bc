// The whole app in headless Chromium on SwiftShader WebGPU, with the tiny SD 1.5-shaped model
// (tests/fixtures/tiny-sd) served locally with Range support: the weight cache in IndexedDB
// (fill, zero-request reload, corrupted chunk, interrupted download), the full edit flow,
// cancelling, offline use, and that nothing is requested from any other origin.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { ROOT, SCREENSHOTS, startServer, launch, openPage, screenshot } from './harness.mjs';

const TINY = path.join(ROOT, 'tests/fixtures/tiny-sd');
let server;
let browser;
const requests = [];

before(async () => {
  server = await startServer([{ prefix: '/models/tiny-sd/', dir: TINY }]);
  browser = await launch({ webgpu: true });
  browser.context.on('request', (r) => requests.push({ url: r.url(), range: r.headers().range ?? null }));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** A PNG written with zlib (a photo-like test image: gradient with a bright disc). */
function writePng(file, width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 255] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0;
    for (let x = 0; x < width; x++) {
      const disc = Math.hypot(x - width * 0.35, y - height * 0.5) < height * 0.22 ? 150 : 0;
      const o = y * (width * 3 + 1) + 1 + x * 3;
      raw[o] = Math.min(255, 40 + x + disc); raw[o + 1] = 70 + disc / 2; raw[o + 2] = Math.min(255, 60 + y * 2);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4); ihdr[8] = 8; ihdr[9] = 2;
  writeFileSync(file, Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]));
}

const PHOTO = path.join(ROOT, 'test-output', 'e2e-photo.png');
mkdirSync(path.dirname(PHOTO), { recursive: true });
writePng(PHOTO, 96, 64);

const waitState = (page, states, timeout = 300_000) =>
  page.waitForFunction((s) => s.includes(document.getElementById('app').dataset.state), states, { timeout });

async function ready(page) {
  await waitState(page, ['ready', 'error'], 120_000);
  assert.equal(await page.getAttribute('#app', 'data-state'), 'ready', await page.textContent('#error'));
}

async function loadTiny(page) {
  await page.check('input[name="source"][value="url"]');
  await page.fill('#model-url', `${server.url}/models/tiny-sd/`);
  await page.click('#load-model');
  await waitState(page, ['model-ready', 'model-error']);
  return page.getAttribute('#app', 'data-state');
}

const weightRequests = (since) => requests.slice(since).filter((r) => r.url.includes('.safetensors'));
const modelRequests = (since) => requests.slice(since).filter((r) => r.url.includes('/models/'));

test('weights: first load fills IndexedDB, a reload needs no network, a corrupted chunk is refetched, an interrupted download resumes', { timeout: 900_000 }, async () => {
  const { page, log } = await openPage(browser.context, `${server.url}/`);
  await ready(page);
  let mark = requests.length;
  assert.equal(await loadTiny(page), 'model-ready', await page.textContent('#error'));
  assert.ok(weightRequests(mark).length >= 6, 'headers and chunks of three files were fetched');
  const chunks = await page.evaluate(async () => {
    const db = await new Promise((res, rej) => { const r = indexedDB.open('gooddrag-weights'); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
    return new Promise((res) => { const r = db.transaction('chunks').objectStore('chunks').count(); r.onsuccess = () => res(r.result); });
  });
  assert.equal(chunks, 3, 'one chunk per tiny weights file is cached');
  assert.match(await page.textContent('#cached-models'), /models\/tiny-sd/);
  await screenshot(page, 'app-model-loaded');

  // Reload: everything comes from IndexedDB.
  await page.reload();
  await ready(page);
  mark = requests.length;
  assert.equal(await loadTiny(page), 'model-ready');
  assert.deepEqual(modelRequests(mark), [], 'a reload makes no request for the model');
  assert.match(await page.textContent('#model-status'), /nothing downloaded/);

  // Corrupt the cached UNet chunk (its stored hash no longer matches): detected, refetched.
  await page.evaluate(async () => {
    const db = await new Promise((res) => { const r = indexedDB.open('gooddrag-weights'); r.onsuccess = () => res(r.result); });
    const store = () => db.transaction('chunks', 'readwrite').objectStore('chunks');
    const keys = await new Promise((res) => { const r = store().getAllKeys(); r.onsuccess = () => res(r.result); });
    const key = keys.find((k) => k.includes('unet/'));
    const v = await new Promise((res) => { const r = store().get(key); r.onsuccess = () => res(r.result); });
    const bytes = new Uint8Array(v.bytes);
    bytes[1000] ^= 0xff;
    await new Promise((res) => { const r = store().put({ ...v, bytes: bytes.buffer }, key); r.onsuccess = res; });
  });
  await page.reload();
  await ready(page);
  mark = requests.length;
  assert.equal(await loadTiny(page), 'model-ready');
  const refetched = weightRequests(mark);
  assert.equal(refetched.length, 1, JSON.stringify(refetched));
  assert.match(refetched[0].url, /unet\//);
  assert.match(await page.textContent('#model-warning'), /damaged/);

  // Interrupted download: delete the cache, drop the VAE's data request once, then resume.
  await page.click('#cached-models button');
  await page.waitForFunction(() => /none/.test(document.getElementById('cached-models').textContent));
  let dropped = 0;
  await browser.context.route('**/vae/*.safetensors', (route) => {
    const range = route.request().headers().range ?? '';
    if (!range.startsWith('bytes=0-') && dropped < 4) { dropped++; return route.abort('connectionreset'); }
    return route.continue();
  });
  assert.equal(await loadTiny(page), 'model-error');
  assert.match(await page.textContent('#error'), /Load again/i);
  await screenshot(page, 'app-download-interrupted');
  await browser.context.unroute('**/vae/*.safetensors');
  mark = requests.length;
  assert.equal(await loadTiny(page), 'model-ready', await page.textContent('#error'));
  const resumed = weightRequests(mark);
  assert.ok(!resumed.some((r) => r.url.includes('/unet/')), `the finished UNet chunk is not fetched again: ${JSON.stringify(resumed)}`);
  assert.ok(resumed.some((r) => r.url.includes('/vae/')));
  assert.deepEqual(log.panics, []);
  await page.close();
});

async function prepareEdit(page) {
  await page.setInputFiles('#image-file', PHOTO);
  await page.waitForSelector('#canvas:not([hidden])');
  await page.locator('#canvas').scrollIntoViewIfNeeded();
  const box = await page.locator('#canvas').boundingBox();
  const at = (x, y) => [box.x + (x / 96) * box.width, box.y + (y / 64) * box.height];
  // Paint the middle band as editable.
  await page.check('input[name="tool"][value="brush"]');
  await page.fill('#brush-size', '30');
  await page.mouse.move(...at(10, 32));
  await page.mouse.down();
  await page.mouse.move(...at(50, 32), { steps: 5 });
  await page.mouse.move(...at(86, 32), { steps: 5 });
  await page.mouse.up();
  // Two pairs.
  await page.check('input[name="tool"][value="points"]');
  for (const [x, y] of [[30, 32], [50, 32], [34, 20], [40, 16]]) await page.mouse.click(...at(x, y));
  assert.match(await page.textContent('#edit-info'), /2 point pairs/);
  // Without a mouse: ] selects the first point (announced for screen readers), the arrow keys
  // move it, one undo-able pixel at a time.
  await page.focus('#canvas');
  await page.keyboard.press(']');
  const selected = (await page.textContent('#point-status')).match(/^Handle 1 of 2 at x (\d+), y (\d+)\.$/);
  assert.ok(selected, await page.textContent('#point-status'));
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.textContent('#point-status'), `Handle 1 of 2 at x ${Number(selected[1]) + 1}, y ${selected[2]}.`);
  await page.keyboard.press('ArrowLeft');
  assert.equal(await page.textContent('#point-status'), selected[0]);
  // A short schedule for the test (SwiftShader pays milliseconds per GPU dispatch, thousands per
  // UNet pass): 4 DDIM steps (3 edited), one drag timestep with two supervision steps, a 2-step
  // LoRA at batch 1 and 64 px.
  const set = (key, value) => page.fill(`[data-key="${key}"]`, String(value));
  // The test photo is 96×64: edit it at its own size (the default would enlarge it to 512).
  await page.selectOption('#working-size', 'native');
  await page.click('#advanced summary');
  await set('n_inference_steps', 4);
  await set('drag_end_step', 1);
  await set('track_per_denoise', 1);
  await set('max_drag_per_track', 2);
  await set('lora.steps', 2);
  await set('lora.batch_size', 1);
  await set('lora.resolution', 64);
}

test('full edit flow, cancel, re-edit from the cache, result tools, offline, same-origin only', { timeout: 1_800_000 }, async () => {
  const { page, log } = await openPage(browser.context, `${server.url}/`);
  await ready(page);
  assert.equal(await loadTiny(page), 'model-ready');
  await prepareEdit(page);
  await screenshot(page, 'app-editor-ready');
  // The advanced settings read as words, grouped by phase, and no label runs into its input at
  // common widths (screenshots of both, looked at when they change).
  for (const width of [1280, 800]) {
    await page.setViewportSize({ width, height: 900 });
    const rows = await page.evaluate(() => [...document.querySelectorAll('#advanced-fields .setting')].map((row) => {
      const l = row.querySelector('label').getBoundingClientRect();
      const i = row.querySelector('[data-key]').getBoundingClientRect();
      return { key: row.querySelector('[data-key]').dataset.key, label: row.querySelector('label').textContent, overlap: l.right > i.left + 0.5 || l.width === 0 };
    }));
    assert.ok(rows.length > 25, `${rows.length} settings shown`);
    assert.deepEqual(rows.filter((r) => r.overlap).map((r) => r.key), [], `labels run into inputs at ${width} px`);
    assert.ok(rows.every((r) => r.label !== r.key), 'human labels, not field names');
    await page.locator('#settings').screenshot({ path: path.join(SCREENSHOTS, `app-settings-${width}.png`) });
  }
  await page.setViewportSize({ width: 1100, height: 800 });

  // Cancel during the first step: that step compiles every GPU program of the UNet's forward and
  // backward (minutes on SwiftShader) and cannot be interrupted, so the page says what it is
  // doing and Cancel restarts the engine after a short grace period. The page is usable again
  // within seconds, long before the step would have ended; the model reloads from IndexedDB.
  await page.click('#run-edit');
  await page.waitForFunction(() => document.getElementById('run-activity').textContent.includes('Preparing GPU programs'), null, { timeout: 60_000 });
  const cancelAt = Date.now();
  await page.click('#cancel-edit');
  await page.waitForFunction(() => /Cancelled\. The engine was restarted/.test(document.getElementById('run-status').textContent), null, { timeout: 60_000 });
  const cancelledAfter = Date.now() - cancelAt;
  await page.waitForSelector('#run-edit:not([disabled])', { timeout: 300_000 });
  console.log(`cancel during the first step: cancelled after ${cancelledAfter} ms, model reloaded and ready after ${Date.now() - cancelAt} ms`);
  assert.notEqual(await page.getAttribute('#app', 'data-last-progress'), 'lora', 'no LoRA step had finished: the cancel did not wait for it');
  assert.equal(await page.textContent('#run-activity'), '', 'the elapsed-time line is cleared');
  assert.match(await page.textContent('#model-status'), /nothing downloaded/, 'the model came from IndexedDB');
  await screenshot(page, 'app-cancelled');

  // The full run.
  const events = [];
  await page.exposeFunction('__seen', (p) => events.push(p));
  await page.evaluate(() => new MutationObserver(() => window.__seen(document.getElementById('app').dataset.lastProgress)).observe(document.getElementById('app'), { attributes: true, attributeFilter: ['data-last-progress'] }));
  // The engine was restarted by the cancel: this run compiles every GPU program first (the
  // LoRA's forward and backward, inversion, drag: up to ~15 minutes on SwiftShader).
  await page.click('#run-edit');
  await page.waitForFunction(() => document.getElementById('app').dataset.lastProgress === 'drag', null, { timeout: 1_200_000 });
  await screenshot(page, 'app-running');
  await waitState(page, ['done', 'edit-error', 'error', 'cancelled'], 900_000);
  assert.equal(await page.getAttribute('#app', 'data-state'), 'done', await page.textContent('#error'));
  for (const phase of ['invert', 'reference', 'drag', 'tracked', 'preview', 'denoise', 'decode']) assert.ok(events.includes(phase), `progress ${phase} seen: ${events}`);
  assert.ok(await page.locator('#previews canvas').count() >= 1, 'per-timestep previews');
  const out = await page.evaluate(() => {
    const a = document.getElementById('after');
    const b = document.getElementById('before');
    const pa = a.getContext('2d').getImageData(0, 0, a.width, a.height).data;
    const pb = b.getContext('2d').getImageData(0, 0, b.width, b.height).data;
    let inside = 0;
    for (let y = 25; y < 40; y++) for (let x = 20; x < 76; x++) { const i = (y * a.width + x) * 4; inside += Math.abs(pa[i] - pb[i]) + Math.abs(pa[i + 1] - pb[i + 1]) + Math.abs(pa[i + 2] - pb[i + 2]); }
    return { width: a.width, height: a.height, inside };
  });
  assert.deepEqual([out.width, out.height], [96, 64], 'the result has the input size');
  assert.ok(out.inside > 0, 'the image changed inside the mask');
  await screenshot(page, 'app-result');

  // Downloads: PNG, points.json, animation.
  for (const [button, pattern] of [['#download-png', /\.png$/], ['#export-points', /points\.json$/], ['#download-gif', /\.gif$/]]) {
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
    assert.match(dl.suggestedFilename(), pattern);
  }

  // Re-edit: the LoRA and the inversion come from the cache.
  await page.click('#run-edit');
  await waitState(page, ['done', 'edit-error', 'error'], 900_000);
  assert.match(await page.textContent('#run-status'), /reused: lora, inversion/);

  // Offline: the shell comes from the service worker, the model from IndexedDB.
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null || navigator.serviceWorker.ready.then(() => true), null, { timeout: 30_000 });
  await page.reload();
  await ready(page);
  await browser.context.setOffline(true);
  try {
    await page.reload();
    await ready(page);
    assert.equal(await loadTiny(page), 'model-ready', await page.textContent('#error'));
    await screenshot(page, 'app-offline');
  } finally {
    await browser.context.setOffline(false);
  }

  assert.deepEqual(log.errors, [], 'page errors');
  assert.deepEqual(log.panics, [], 'wasm panics');
  const foreign = requests.filter((r) => !r.url.startsWith(server.url) && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
  assert.deepEqual(foreign, [], 'requests to other origins');
});
