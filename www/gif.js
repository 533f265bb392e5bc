// A small animated-GIF encoder for the drag animation (frames from the per-timestep previews):
// fixed 3-3-2 RGB palette (256 colours), LZW-compressed, looping. Pure; unit-tested.

const PALETTE = (() => {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    p[i * 3] = Math.round((((i >> 5) & 7) * 255) / 7);
    p[i * 3 + 1] = Math.round((((i >> 2) & 7) * 255) / 7);
    p[i * 3 + 2] = Math.round(((i & 3) * 255) / 3);
  }
  return p;
})();

/** Palette index of an RGB colour (nearest level per channel). */
export function paletteIndex(r, g, b) {
  return (Math.round((r * 7) / 255) << 5) | (Math.round((g * 7) / 255) << 2) | Math.round((b * 3) / 255);
}

/** The colour of a palette index. */
export function paletteColor(i) {
  return [PALETTE[i * 3], PALETTE[i * 3 + 1], PALETTE[i * 3 + 2]];
}

/** GIF LZW of 8-bit indices (min code size 8), as data sub-blocks. */
export function lzw(indices) {
  const out = [];
  let cur = 0, bits = 0;
  const emit = (code, size) => {
    cur |= code << bits;
    bits += size;
    while (bits >= 8) { out.push(cur & 255); cur >>>= 8; bits -= 8; }
  };
  const clear = 256, end = 257;
  let size = 9, next = 258;
  let dict = new Map();
  emit(clear, size);
  let prefix = indices.length ? indices[0] : -1;
  for (let i = 1; i < indices.length; i++) {
    const k = indices[i];
    const key = prefix * 256 + k;
    const hit = dict.get(key);
    if (hit !== undefined) { prefix = hit; continue; }
    emit(prefix, size);
    if (next < 4096) {
      dict.set(key, next++);
      if (next > (1 << size) && size < 12) size++;
    } else {
      emit(clear, size);
      dict = new Map(); size = 9; next = 258;
    }
    prefix = k;
  }
  if (prefix >= 0) emit(prefix, size);
  emit(end, size);
  if (bits > 0) out.push(cur & 255);
  const blocks = [];
  for (let i = 0; i < out.length; i += 255) {
    const part = out.slice(i, i + 255);
    blocks.push(part.length, ...part);
  }
  blocks.push(0);
  return blocks;
}

/** Encodes RGBA frames (all `width × height`) as a looping GIF; `delayMs` per frame. */
export function encodeGif(frames, width, height, delayMs = 500) {
  const bytes = [];
  const u16 = (v) => bytes.push(v & 255, (v >> 8) & 255);
  bytes.push(...[...'GIF89a'].map((c) => c.charCodeAt(0)));
  u16(width); u16(height);
  bytes.push(0xf7, 0, 0); // global colour table, 256 entries
  bytes.push(...PALETTE);
  bytes.push(0x21, 0xff, 11, ...[...'NETSCAPE2.0'].map((c) => c.charCodeAt(0)), 3, 1, 0, 0, 0); // loop forever
  for (const rgba of frames) {
    bytes.push(0x21, 0xf9, 4, 0, 0, 0, 0, 0);
    bytes[bytes.length - 4] = Math.round(delayMs / 10) & 255;
    bytes[bytes.length - 3] = (Math.round(delayMs / 10) >> 8) & 255;
    bytes.push(0x2c); u16(0); u16(0); u16(width); u16(height); bytes.push(0);
    const idx = new Array(width * height);
    for (let i = 0; i < width * height; i++) idx[i] = paletteIndex(rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2]);
    bytes.push(8, ...lzw(idx));
  }
  bytes.push(0x3b);
  return new Uint8Array(bytes);
}
