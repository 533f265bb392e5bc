// Pure front-end helpers: the edit state (points, mask, undo/redo, points.json), coordinate
// mapping, config form flattening, weights plan helpers, the GIF encoder and formatting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EditState, clientToImage, rgbaToRgb, rgbToRgba } from '../../www/edit-state.js';
import { flattenConfig, unflattenConfig } from '../../www/config-form.js';
import { modelFileList, relativePaths, sha256Hex, urlSource, fileKey } from '../../www/weights-plan.js';
import { encodeGif, lzw, paletteIndex, paletteColor } from '../../www/gif.js';
import { formatDuration } from '../../www/format.js';

test('points alternate handle/target, move, delete by pair, and undo/redo', () => {
  const s = new EditState(100, 80);
  s.addPoint(10.4, 20.6);
  s.addPoint(50, 20);
  s.addPoint(200, -5); // clamped into the image
  assert.deepEqual(s.points, [{ x: 10, y: 21 }, { x: 50, y: 20 }, { x: 99, y: 0 }]);
  assert.deepEqual(s.pairPoints(), [[10, 21], [50, 20]], 'a lone handle is not a pair');
  assert.equal(s.pointAt(11, 20, 3), 0);
  assert.equal(s.pointAt(30, 30, 3), -1);
  s.deletePair(1);
  assert.deepEqual(s.points, [{ x: 99, y: 0 }]);
  assert.ok(s.undo());
  assert.equal(s.points.length, 3);
  assert.ok(s.redo());
  assert.equal(s.points.length, 1);
  s.clearPoints();
  assert.equal(s.points.length, 0);
  assert.ok(s.undo());
  assert.equal(s.points.length, 1);
});

test('mask painting, erasing, clearing and undo', () => {
  const s = new EditState(20, 10);
  assert.ok(s.maskIsEmpty());
  const before = s.snapshot();
  s.paintLine(2, 5, 17, 5, 2, 255);
  s.commit(before);
  assert.equal(s.mask[5 * 20 + 10], 255);
  assert.equal(s.mask[0], 0);
  const b2 = s.snapshot();
  s.paint(10, 5, 1, 0);
  s.commit(b2);
  assert.equal(s.mask[5 * 20 + 10], 0);
  s.undo();
  assert.equal(s.mask[5 * 20 + 10], 255);
  s.clearMask();
  assert.ok(s.maskIsEmpty());
});

test('points.json export/import in the official layout, with clear errors', () => {
  const s = new EditState(64, 48);
  s.addPoint(1, 2); s.addPoint(3, 4);
  assert.equal(s.toPointsJson(), '{"points":[[1,2],[3,4]]}');
  const t = new EditState(64, 48);
  t.loadPointsJson('{"points": [[5, 6], [7, 8]]}');
  assert.deepEqual(t.pairPoints(), [[5, 6], [7, 8]]);
  assert.throws(() => t.loadPointsJson('{nope'), /not valid JSON/);
  assert.throws(() => t.loadPointsJson('{"points": [[1, 2]]}'), /pairs/);
  assert.throws(() => t.loadPointsJson('{"points": [[1, 2], [64, 1]]}'), /outside/);
});

test('client coordinates map to image pixels at any zoom', () => {
  const rect = { left: 10, top: 20, width: 200, height: 100 };
  assert.deepEqual(clientToImage(110, 70, rect, 400, 200), { x: 200, y: 100 });
  assert.deepEqual(clientToImage(10, 20, rect, 400, 200), { x: 0, y: 0 });
});

test('RGB ↔ RGBA', () => {
  const rgb = new Uint8Array([1, 2, 3, 4, 5, 6]);
  const rgba = rgbToRgba(rgb);
  assert.deepEqual([...rgba], [1, 2, 3, 255, 4, 5, 6, 255]);
  assert.deepEqual([...rgbaToRgb(rgba)], [...rgb]);
});

test('config form round-trips nested fields and rejects non-numbers', () => {
  const cfg = { lambda: 0.2, masactrl: true, lora: { steps: 70, rank: 16 }, patch_weight: 'two-r' };
  const flat = flattenConfig(cfg);
  assert.deepEqual(flat.map((f) => f.key), ['lambda', 'masactrl', 'lora.steps', 'lora.rank', 'patch_weight']);
  assert.deepEqual(unflattenConfig(flat), cfg);
  assert.throws(() => unflattenConfig([{ key: 'lora.steps', value: NaN }]), /lora.steps/);
});

test('weights plan: fp16 first, folder paths, keys, sha256', async () => {
  const w = modelFileList().weights;
  assert.deepEqual(w.map((x) => x.part), ['unet', 'vae', 'text_encoder']);
  assert.ok(w.every((x) => x.candidates[0].includes('.fp16.')));
  const rel = relativePaths([{ path: 'sd15/unet/config.json', file: 1 }, { path: 'x/sd15/tokenizer/vocab.json', file: 2 }, { path: 'readme.md', file: 3 }]);
  assert.deepEqual(rel, { 'unet/config.json': 1, 'tokenizer/vocab.json': 2 });
  assert.equal(urlSource('https://h/x').base, 'https://h/x/');
  assert.equal(fileKey('id', 'unet/a'), 'id/unet/a');
  assert.equal(await sha256Hex(new TextEncoder().encode('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

/** A reference GIF LZW decoder (variable code size, clear/end codes). */
function unlzw(blocks, minSize = 8) {
  const data = [];
  for (let i = 0; blocks[i] !== 0; i += blocks[i] + 1) data.push(...blocks.slice(i + 1, i + 1 + blocks[i]));
  let pos = 0;
  const read = (n) => {
    let v = 0;
    for (let k = 0; k < n; k++, pos++) v |= ((data[pos >> 3] >> (pos & 7)) & 1) << k;
    return v;
  };
  const clear = 1 << minSize, end = clear + 1;
  let size = minSize + 1, dict = [], prev = null;
  const out = [];
  const reset = () => { dict = Array.from({ length: clear + 2 }, (_, i) => [i]); size = minSize + 1; prev = null; };
  reset();
  for (;;) {
    const code = read(size);
    if (code === clear) { reset(); continue; }
    if (code === end) break;
    let entry;
    if (code < dict.length) entry = dict[code];
    else entry = [...prev, prev[0]];
    out.push(...entry);
    if (prev) dict.push([...prev, entry[0]]);
    prev = entry;
    if (dict.length === 1 << size && size < 12) size++;
  }
  return out;
}

test('GIF LZW round-trips, including a dictionary reset past 4096 codes', () => {
  for (const input of [[], [7], [1, 1, 1, 1, 2, 2, 1, 1], Array.from({ length: 20000 }, (_, i) => (i * 7919) % 251)]) {
    assert.deepEqual(unlzw(lzw(input)), input);
  }
});

test('GIF file structure and palette', () => {
  assert.deepEqual(paletteColor(paletteIndex(255, 0, 255)), [255, 0, 255]);
  const frame = new Uint8ClampedArray(4 * 4 * 4).fill(255);
  const gif = encodeGif([frame, frame], 4, 4, 500);
  assert.equal(String.fromCharCode(...gif.slice(0, 6)), 'GIF89a');
  assert.equal(gif[6] | (gif[7] << 8), 4);
  assert.equal(gif.at(-1), 0x3b);
  assert.equal([...gif].filter((b, i) => b === 0x2c && gif[i - 1] === 0 && gif[i - 8] === 0x21).length >= 1, true);
});

test('durations read naturally', () => {
  assert.equal(formatDuration(4.25), '4.3 s');
  assert.equal(formatDuration(125), '2 min 5 s');
  assert.equal(formatDuration(3700), '1 h 1 min');
  assert.equal(formatDuration(Infinity), 'unknown');
});

test('every DragConfig and LoraConfig field has a readable label, group and hint', async () => {
  const { SETTINGS, SETTING_GROUPS, describeSetting } = await import('../../www/config-form.js');
  const fs = await import('node:fs');
  const fields = (file, struct) => {
    const src = fs.readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');
    const body = src.slice(src.indexOf(`pub struct ${struct} {`)).split('\n}')[0];
    return [...body.matchAll(/^\s+pub (\w+):/gm)].map((m) => m[1]);
  };
  const keys = [
    ...fields('src/drag/config.rs', 'DragConfig').filter((k) => k !== 'prompt' && k !== 'lora'),
    ...fields('src/lora/train.rs', 'LoraConfig').map((k) => `lora.${k}`),
  ];
  assert.ok(keys.length > 25, keys.join(', '));
  for (const key of keys) {
    const s = SETTINGS[key];
    assert.ok(s, `${key} has a description`);
    assert.ok(SETTING_GROUPS.includes(s.group) && s.group !== 'Other', key);
    assert.ok(s.label && s.label !== key && s.hint.length > 10, key);
  }
  assert.deepEqual(Object.keys(SETTINGS).sort(), [...keys].sort(), 'no description of a field that no longer exists');
  assert.equal(describeSetting('new_field').label, 'new_field');
});

test('a keyboard nudge moves one point, stays inside the image and undoes in one step', () => {
  const s = new EditState(20, 10);
  s.addPoint(5, 5);
  s.addPoint(15, 5);
  s.nudgePoint(0, 1, 0);
  assert.deepEqual(s.points[0], { x: 6, y: 5 });
  s.nudgePoint(1, 10, 10);
  assert.deepEqual(s.points[1], { x: 19, y: 9 }, 'clamped to the image');
  s.undo();
  assert.deepEqual(s.points[1], { x: 15, y: 5 });
  s.nudgePoint(7, 1, 1);
  assert.equal(s.points.length, 2);
});
