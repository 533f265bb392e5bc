// <good-drag> on a host page with its own (aggressive) styles: two widgets, one engine worker
// and one weight cache; events with their documented payloads; style isolation both ways; and a
// run driven purely through the JS API.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ROOT, startServer, launch, openPage, screenshot } from './harness.mjs';

let server;
let browser;
const requests = [];

/** IEEE half ↔ double, for editing an fp16 tensor in place. */
const halfToFloat = (h) => {
  const e = (h >> 10) & 31;
  const m = h & 1023;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
};
const floatToHalf = (f) => {
  const sign = f < 0 ? 0x8000 : 0;
  const a = Math.abs(f);
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24);
  const e = Math.floor(Math.log2(a));
  let m = Math.round((a / 2 ** e - 1) * 1024);
  let be = e + 15;
  if (m === 1024) { m = 0; be += 1; }
  return sign | (be << 10) | m;
};

/**
 * A second tiny model that differs from tests/fixtures/tiny-sd: the same files, with the VAE
 * decoder's output bias shifted by +0.5 in the fp16 file the loader takes (the same dtypes as
 * the first model, so no GPU program is compiled for it). Written under test-output/.
 */
function secondTinyModel() {
  const src = path.join(ROOT, 'tests/fixtures/tiny-sd');
  const dir = path.join(ROOT, 'test-output', 'tiny-sd-b');
  rmSync(dir, { recursive: true, force: true });
  cpSync(src, dir, { recursive: true });
  const file = path.join(dir, 'vae', 'diffusion_pytorch_model.fp16.safetensors');
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  const bias = header['decoder.conv_out.bias'];
  assert.equal(bias.dtype, 'F16');
  for (let at = 8 + headerLength + bias.data_offsets[0]; at < 8 + headerLength + bias.data_offsets[1]; at += 2) {
    const before = halfToFloat(bytes.readUInt16LE(at));
    bytes.writeUInt16LE(floatToHalf(before + 0.5), at);
    assert.ok(Math.abs(halfToFloat(bytes.readUInt16LE(at)) - (before + 0.5)) < 1e-2);
  }
  writeFileSync(file, bytes);
  return dir;
}

before(async () => {
  server = await startServer([
    { prefix: '/models/tiny-sd/', dir: path.join(ROOT, 'tests/fixtures/tiny-sd') },
    { prefix: '/models/tiny-sd-b/', dir: secondTinyModel() },
  ]);
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

test('two widgets share one engine, keep their styles to themselves, fire documented events; the JS API runs an edit', { timeout: 2_400_000 }, async () => {
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
    // Edited at a 64-px long side (64×48), returned at the image's 80×64.
    el.setAttribute('working-size', '64');
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

  // The JS API without any element, on the same model (no model request at all), with a phone
  // photo: a 3000×4000 JPEG stored sideways with EXIF orientation 6 (viewed 4000×3000), a mask
  // and two pairs in upright pixels, edited at a 64-px long side (64×48: the widgets' working
  // shape, so SwiftShader compiles no second set of GPU programs). The result is the upright
  // photo at its own size: byte for byte the decoded photo away from the mask, the edit inside
  // it.
  const mark = requests.length;
  const api = await page.evaluate(async ({ model, FAST }) => {
    const { GoodDrag } = await import('/api.js');
    const stored = new OffscreenCanvas(3000, 4000);
    const g = stored.getContext('2d');
    const grad = g.createLinearGradient(0, 0, 3000, 4000);
    grad.addColorStop(0, '#234'); grad.addColorStop(1, '#c96');
    g.fillStyle = grad; g.fillRect(0, 0, 3000, 4000);
    // Orientation 6 shows stored (x, y) at (3999 − y, x): this disc lands at (2000, 1500).
    g.fillStyle = '#fe8'; g.beginPath(); g.arc(1500, 2000, 500, 0, 7); g.fill();
    const jpeg = new Uint8Array(await (await stored.convertToBlob({ type: 'image/jpeg', quality: 0.9 })).arrayBuffer());
    // APP1 "Exif": a big-endian TIFF with one IFD entry, orientation (0x0112, SHORT) = 6.
    const tiff = [0x4d, 0x4d, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0];
    const payload = [...new TextEncoder().encode('Exif'), 0, 0, ...tiff];
    const app1 = [0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 255, ...payload];
    const blob = new Blob([jpeg.subarray(0, 2), new Uint8Array(app1), jpeg.subarray(2)], { type: 'image/jpeg' });
    // What a viewer shows: 4000×3000.
    const bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' });
    const [W, H] = [bitmap.width, bitmap.height];
    const view = new OffscreenCanvas(W, H);
    view.getContext('2d').drawImage(bitmap, 0, 0);
    const shown = view.getContext('2d').getImageData(0, 0, W, H).data;
    // Editable: the middle of the upright photo.
    const mask = new Uint8Array(W * H);
    for (let y = 1000; y < 2000; y++) mask.fill(1, y * W + 1500, y * W + 2500);
    const gd = new GoodDrag({ modelSrc: model });
    const seen = [];
    const r = await gd.edit({ image: blob, mask, size: 64, points: [[1800, 1300], [2200, 1300], [2000, 1700], [2200, 1700]], config: FAST, onProgress: (p) => seen.push(p.phase) });
    let outsideDiffer = 0;
    let insideDiffer = 0;
    for (let y = 0; y < H; y += 7) {
      for (let x = 0; x < W; x += 7) {
        const i = y * W + x;
        const same = r.rgb[3 * i] === shown[4 * i] && r.rgb[3 * i + 1] === shown[4 * i + 1] && r.rgb[3 * i + 2] === shown[4 * i + 2];
        // The feather reaches 8 working pixels (500 photo pixels) beyond the mask, the
        // enlargement one more.
        const far = x < 800 || x >= 3200 || y < 300 || y >= 2700;
        if (far && !same) outsideDiffer++;
        if (mask[i] && !same) insideDiffer++;
      }
    }
    return { W, H, width: r.width, height: r.height, rgb: r.rgb.length, working: [r.working.width, r.working.height, r.working.rgb.length], newPoints: r.newPoints, seen: seen.length, outsideDiffer, insideDiffer };
  }, { model, FAST });
  assert.deepEqual([api.W, api.H], [4000, 3000], 'the browser applies the EXIF orientation');
  assert.deepEqual([api.width, api.height, api.rgb], [4000, 3000, 4000 * 3000 * 3], 'the result is the upright photo at its own size');
  assert.deepEqual(api.working, [64, 48, 64 * 48 * 3]);
  assert.equal(api.outsideDiffer, 0, 'away from the mask the result is the photo, byte for byte');
  assert.ok(api.insideDiffer > 1000, `the edited region differs (${api.insideDiffer} samples)`);
  assert.equal(api.newPoints.length, 4);
  assert.deepEqual(api.newPoints[1], [2200, 1300], 'targets come back as given, in photo pixels');
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
  // f16 compute asked of an adapter without shader-f16 (SwiftShader here) is refused the same
  // way, before any work; an unknown precision or memory budget too.
  const asked = await page.evaluate(async ({ model, FAST }) => {
    const { GoodDrag } = await import('/api.js');
    const gd = new GoodDrag({ modelSrc: model });
    const shaderF16 = (await gd.ready())?.shaderF16;
    const out = { shaderF16 };
    for (const [key, extra] of [['f16', { precision: 'f16' }], ['f8', { precision: 'f8' }], ['budget', { memoryBudget: 'lots' }]]) {
      try {
        await gd.edit({ image: new ImageData(64, 48), points: [[20, 24], [40, 24]], config: FAST, ...extra });
        out[key] = null;
      } catch (e) {
        out[key] = { message: e.message, code: e.code };
      }
    }
    return out;
  }, { model, FAST });
  if (asked.shaderF16 === false) {
    assert.equal(asked.f16?.code, 'invalid-input', JSON.stringify(asked));
    assert.match(asked.f16.message, /shader-f16/);
  }
  assert.match(asked.f8?.message ?? '', /precision: .*expected auto, f32 or f16/, JSON.stringify(asked));
  assert.match(asked.budget?.message ?? '', /memoryBudget: .*8GiB/, JSON.stringify(asked));

  // Two widgets with two different models edit at the same time on the one shared engine. B
  // gets A's preset, image, points, mask and settings, so only the model differs: A's result
  // must equal its earlier solo run bit for bit (edits are deterministic), and B's must differ
  // from it (had B run on A's model it would be identical) — so each ran on its own model (the
  // worker loads each edit's own model first).
  const two = await page.evaluate(async ({ modelB }) => {
    const digest = (rgb) => { let h = 0; for (const v of rgb) h = (Math.imul(h, 31) + v) >>> 0; return h; };
    const a = document.getElementById('a');
    const b = document.getElementById('b');
    b.setAttribute('model-src', modelB);
    b.setAttribute('working-size', '64');
    b.setAttribute('preset', a.getAttribute('preset'));
    b.config = a.config;
    const { width, height, rgb } = a.image;
    const rgba = new Uint8ClampedArray(width * height * 4);
    for (let i = 0; i < width * height; i++) rgba.set([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], 255], 4 * i);
    await b.setImage(new ImageData(rgba, width, height));
    b.setPoints(a.state.pairPoints());
    b.setMask(a.state.mask);
    const aSolo = digest(a.result.rgb);
    const [ra, rb] = await Promise.all([a.run(), b.run()]);
    return { aSolo, a: digest(ra.rgb), b: digest(rb.rgb) };
  }, { modelB: `${server.url}/models/tiny-sd-b/` });
  assert.equal(two.a, two.aSolo, 'widget A ran on its own model, as alone');
  assert.notEqual(two.b, two.aSolo, 'widget B did not run on A\'s model');

  assert.deepEqual(log.errors, []);
  assert.deepEqual(log.panics, []);
  assert.deepEqual(requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:')), []);
});
