// The edit being prepared, without any DOM: image size, the editable mask (one byte per pixel,
// 255 = may change), handle/target points in image pixels, and undo/redo over both. Pure, so
// node --test covers it; the canvas (canvas-view.js) only draws it and forwards input.

export class EditState {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.mask = new Uint8Array(width * height);
    /** Flat list: even index = handle, odd = target; each { x, y } in image pixels. */
    this.points = [];
    this.undoStack = [];
    this.redoStack = [];
  }

  snapshot() {
    return { mask: this.mask.slice(), points: this.points.map((p) => ({ ...p })) };
  }

  restore(s) {
    this.mask = s.mask.slice();
    this.points = s.points.map((p) => ({ ...p }));
  }

  /** Records `before` (a snapshot taken before a change) as one undoable step. */
  commit(before) {
    this.undoStack.push(before);
    if (this.undoStack.length > 100) this.undoStack.shift();
    this.redoStack = [];
  }

  undo() {
    const s = this.undoStack.pop();
    if (!s) return false;
    this.redoStack.push(this.snapshot());
    this.restore(s);
    return true;
  }

  redo() {
    const s = this.redoStack.pop();
    if (!s) return false;
    this.undoStack.push(this.snapshot());
    this.restore(s);
    return true;
  }

  clamp(x, y) {
    return { x: Math.min(Math.max(Math.round(x), 0), this.width - 1), y: Math.min(Math.max(Math.round(y), 0), this.height - 1) };
  }

  /** Adds a point (handle if the count is even, else target); returns its index. */
  addPoint(x, y) {
    const before = this.snapshot();
    this.points.push(this.clamp(x, y));
    this.commit(before);
    return this.points.length - 1;
  }

  movePoint(i, x, y) {
    if (i < 0 || i >= this.points.length) return;
    this.points[i] = this.clamp(x, y);
  }

  /** Moves point `i` by (dx, dy) pixels as one undoable change (keyboard nudges). */
  nudgePoint(i, dx, dy) {
    if (i < 0 || i >= this.points.length) return;
    const before = this.snapshot();
    const p = this.points[i];
    this.points[i] = this.clamp(p.x + dx, p.y + dy);
    this.commit(before);
  }

  /** Deletes the pair containing point `i` (or the lone handle). */
  deletePair(i) {
    if (i < 0 || i >= this.points.length) return;
    const before = this.snapshot();
    const start = i - (i % 2);
    this.points.splice(start, 2);
    this.commit(before);
  }

  /** Index of the point nearest to (x, y) within `radius`, or -1. */
  pointAt(x, y, radius) {
    let best = -1;
    let bestD = radius * radius;
    this.points.forEach((p, i) => {
      const d = (p.x - x) ** 2 + (p.y - y) ** 2;
      if (d <= bestD) { best = i; bestD = d; }
    });
    return best;
  }

  /** Paints (value 255) or erases (0) a disc. */
  paint(x, y, radius, value) {
    const r = Math.max(0.5, radius);
    const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(this.width - 1, Math.ceil(x + r));
    const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(this.height - 1, Math.ceil(y + r));
    for (let yy = y0; yy <= y1; yy++) {
      for (let xx = x0; xx <= x1; xx++) {
        if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) this.mask[yy * this.width + xx] = value;
      }
    }
  }

  /** Paints along a segment (a brush stroke between two pointer events). */
  paintLine(ax, ay, bx, by, radius, value) {
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(1, radius / 2)));
    for (let s = 0; s <= steps; s++) this.paint(ax + ((bx - ax) * s) / steps, ay + ((by - ay) * s) / steps, radius, value);
  }

  clearMask() {
    const before = this.snapshot();
    this.mask.fill(0);
    this.commit(before);
  }

  clearPoints() {
    const before = this.snapshot();
    this.points = [];
    this.commit(before);
  }

  /** Complete pairs as [[x, y], …] (a trailing lone handle is left out). */
  pairPoints() {
    const n = this.points.length - (this.points.length % 2);
    return this.points.slice(0, n).map((p) => [p.x, p.y]);
  }

  maskIsEmpty() {
    return !this.mask.some((v) => v > 0);
  }

  /** The official points.json layout. */
  toPointsJson() {
    return JSON.stringify({ points: this.pairPoints() });
  }

  /** Replaces the points from a points.json text; throws a user-facing Error if invalid. */
  loadPointsJson(text) {
    let doc;
    try { doc = JSON.parse(text); } catch { throw new Error('This is not a points.json file (not valid JSON).'); }
    const pts = doc?.points;
    if (!Array.isArray(pts) || pts.length % 2 !== 0 || !pts.every((p) => Array.isArray(p) && p.length === 2 && p.every(Number.isFinite))) {
      throw new Error('points.json must be {"points": [[x, y], …]} with handle/target pairs.');
    }
    const outside = pts.find(([x, y]) => x < 0 || y < 0 || x >= this.width || y >= this.height);
    if (outside) throw new Error(`Point [${outside}] lies outside this ${this.width}×${this.height} image.`);
    const before = this.snapshot();
    this.points = pts.map(([x, y]) => ({ x, y }));
    this.commit(before);
  }
}

/** Client (CSS pixel) coordinates → image pixels, for an element showing the image scaled to `rect`. */
export function clientToImage(clientX, clientY, rect, width, height) {
  return { x: ((clientX - rect.left) / rect.width) * width, y: ((clientY - rect.top) / rect.height) * height };
}

/** RGBA ImageData bytes → packed RGB. */
export function rgbaToRgb(rgba) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

/** Packed RGB → RGBA (opaque). */
export function rgbToRgba(rgb) {
  const rgba = new Uint8ClampedArray((rgb.length / 3) * 4);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    rgba[j] = rgb[i]; rgba[j + 1] = rgb[i + 1]; rgba[j + 2] = rgb[i + 2]; rgba[j + 3] = 255;
  }
  return rgba;
}
