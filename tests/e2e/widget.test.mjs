// <good-drag> on a host page with its own (aggressive) styles: two widgets, one engine worker
// and one weight cache; events with their documented payloads; style isolation both ways; and a
// run driven purely through the JS API.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, startServer, launch, openPage, screenshot } from './harness.mjs';

let server;
let browser;
const requests = [];

before(async () => {
  server = await startServer([{ prefix: '/models/tiny-sd/', dir: path.join(ROOT, 'tests/fixtures/tiny-sd') }]);
  browser = await launch({ webgpu: true });
  browser.context.on('request', (r) => requests.push(r.url()));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

// A short schedule for the test (SwiftShader pays milliseconds per GPU dispatch): 4 DDIM steps,
// one drag timestep with one supervision step, no LoRA.
const FAST = { n_inference_steps: 4, drag_end_step: 1, track_per_denoise: 1, max_drag_per_track: 1, use_lora: false };

test('two widgets share one engine, keep their styles to themselves, fire documented events; the JS API runs an edit', { timeout: 1_500_000 }, async () => {
  const { page, log } = await openPage(browser.context, `${server.url}/examples/embed.html`);
  const model = `${server.url}/models/tiny-sd/`;
  // Both widgets report ready with the adapter.
  await page.waitForFunction(() => (document.getElementById('log').textContent.match(/ ready /g) ?? []).length === 2, null, { timeout: 120_000 });
  assert.match(await page.textContent('#log'), /a ready \{.*"backend":"BrowserWebGpu"/);
  assert.equal(requests.filter((u) => u.endsWith('/worker.js')).length, 1, 'one engine worker for the page');

  // Style isolation: the widget's inner layout is the same with and without the host stylesheet,
  // and the host's button is the same with and without the widgets.
  const inner = () => page.evaluate(() => {
    const el = document.getElementById('a');
    el.style.width = '320px';
    const r = (sel) => { const b = el.shadowRoot.querySelector(sel).getBoundingClientRect(); return [b.width, b.height]; };
    return { run: r('.run'), bar: r('.bar'), font: getComputedStyle(el.shadowRoot.querySelector('.run')).fontFamily };
  });
  const hostButton = () => page.evaluate(() => { const b = document.getElementById('host-button'); const s = getComputedStyle(b); return [b.getBoundingClientRect().height, s.paddingTop, s.backgroundColor, s.fontSize]; });
  const styled = await inner();
  const hostWith = await hostButton();
  await page.evaluate(() => { for (const s of document.styleSheets) if (s.href?.endsWith('embed.css')) s.disabled = true; });
  assert.deepEqual(await inner(), styled, 'host styles do not reach inside the widget');
  await page.evaluate(() => { for (const s of document.styleSheets) if (s.href?.endsWith('embed.css')) s.disabled = false; });
  const clones = await page.evaluate(() => { const a = document.getElementById('a'); const b = document.getElementById('b'); const keep = [a.cloneNode(), b.cloneNode()]; a.remove(); b.remove(); window.__kept = keep; return true; });
  assert.ok(clones);
  const hostWithout = await hostButton();
  assert.deepEqual(hostWith, hostWithout, 'the widget does not restyle the host');
  await page.reload();
  await page.waitForFunction(() => (document.getElementById('log').textContent.match(/ ready /g) ?? []).length === 2, null, { timeout: 120_000 });
  await screenshot(page, 'widget-host-page');

  // error event: run without points.
  const err = await page.evaluate(() => new Promise((resolve) => {
    const el = document.getElementById('a');
    el.addEventListener('error', (e) => resolve(e.detail), { once: true });
    el.run().catch(() => {});
  }));
  assert.match(err.message, /handle\/target pair/);

  // Widget A: image, mask, points through its methods; progress and result events.
  const fromA = await page.evaluate(async ({ model, FAST }) => {
    const el = document.getElementById('a');
    el.setAttribute('model-src', model);
    el.config = FAST;
    const c = new OffscreenCanvas(80, 64);
    const g = c.getContext('2d');
    g.fillStyle = '#345'; g.fillRect(0, 0, 80, 64);
    g.fillStyle = '#fc6'; g.beginPath(); g.arc(30, 32, 12, 0, 7); g.fill();
    await el.setImage(await c.convertToBlob());
    el.setPoints([[30, 32], [50, 32]]);
    const mask = new Uint8Array(80 * 64);
    mask.fill(1, 16 * 80, 48 * 80);
    el.setMask(mask);
    const phases = new Set();
    el.addEventListener('progress', (e) => phases.add(e.detail.phase));
    const done = new Promise((resolve) => el.addEventListener('result', (e) => resolve(e.detail), { once: true }));
    const r = await el.run();
    const ev = await done;
    return { phases: [...phases], width: ev.width, height: ev.height, rgb: ev.rgb.length, same: ev === r, handles: r.finalHandles, result: el.result === r };
  }, { model, FAST });
  assert.deepEqual([fromA.width, fromA.height, fromA.rgb], [80, 64, 80 * 64 * 3]);
  assert.ok(fromA.same && fromA.result, 'the result event carries what run() resolves to and what .result holds');
  for (const phase of ['invert', 'reference', 'drag', 'denoise', 'decode']) assert.ok(fromA.phases.includes(phase), `${phase} in ${fromA.phases}`);
  await screenshot(page, 'widget-after-run');

  // The JS API without any element, on the same model: no model request at all.
  const mark = requests.length;
  const api = await page.evaluate(async ({ model, FAST }) => {
    const { GoodDrag } = await import('/api.js');
    const gd = new GoodDrag({ modelSrc: model });
    const img = new ImageData(64, 48);
    for (let i = 0; i < img.data.length; i += 4) { img.data[i] = (i / 4) % 64 * 4; img.data[i + 1] = 90; img.data[i + 2] = 120; img.data[i + 3] = 255; }
    const seen = [];
    const r = await gd.edit({ image: img, points: [[20, 24], [40, 24]], config: FAST, onProgress: (p) => seen.push(p.phase) });
    return { width: r.width, height: r.height, rgb: r.rgb.length, newPoints: r.newPoints, seen: seen.length };
  }, { model, FAST });
  assert.deepEqual([api.width, api.height, api.rgb], [64, 48, 64 * 48 * 3]);
  assert.equal(api.newPoints.length, 2);
  assert.ok(api.seen > 0);
  assert.deepEqual(requests.slice(mark).filter((u) => u.includes('/models/')), [], 'the second user of the model loads nothing');

  // An error from the engine crosses the wasm boundary structured: the Rust error's kind as
  // `code` (the worker never matches message text), the page-level `kind` beside it.
  const refused = await page.evaluate(async ({ model, FAST }) => {
    const { GoodDrag } = await import('/api.js');
    const gd = new GoodDrag({ modelSrc: model });
    try {
      await gd.edit({ image: new ImageData(64, 48), points: [[20, 24], [40, 24]], config: { ...FAST, n_inference_steps: 0 } });
      return null;
    } catch (e) {
      return { message: e.message, kind: e.kind, code: e.code };
    }
  }, { model, FAST });
  assert.ok(refused, 'an invalid config is refused');
  assert.deepEqual([refused.kind, refused.code], ['engine', 'invalid-input'], JSON.stringify(refused));
  assert.match(refused.message, /n_inference_steps/);

  assert.deepEqual(log.errors, []);
  assert.deepEqual(log.panics, []);
  assert.deepEqual(requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:')), []);
});
