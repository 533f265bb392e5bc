// The editing canvas: draws the photo, the mask overlay and the points (handles: red discs,
// targets: blue squares — told apart by shape, not only colour; white arrow), and turns pointer
// and keyboard input into EditState changes for the current tool. Keyboard (the canvas is
// focusable): [ and ] select the previous / next point, the arrow keys move it (Shift: 10 px),
// Delete or Backspace removes its pair; `onSelect` announces the selection.

import { clientToImage } from './edit-state.js';

export class CanvasView {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {() => {state: import('./edit-state.js').EditState, tool: string, brush: number, locked: boolean}} ctx
   * @param {() => void} onChange called after every edit
   */
  constructor(canvas, ctx, onChange, onSelect = () => {}) {
    this.canvas = canvas;
    this.onSelect = onSelect;
    canvas.tabIndex = 0;
    canvas.setAttribute('role', 'application');
    canvas.setAttribute('aria-label', 'Photo. Click to add a handle, then its target. Keys: [ and ] select a point, arrows move it (Shift: 10 pixels), Delete removes its pair.');
    canvas.addEventListener('keydown', (e) => this.#key(e));
    this.ctx2d = canvas.getContext('2d');
    this.context = ctx;
    this.onChange = onChange;
    this.image = null; // ImageBitmap / canvas of the photo
    this.selected = -1;
    this.drag = null; // { kind: 'point'|'paint', index?, before, last? }
    this.liveHandles = null; // handles reported by a running edit
    canvas.addEventListener('pointerdown', (e) => this.#down(e));
    canvas.addEventListener('pointermove', (e) => this.#move(e));
    canvas.addEventListener('pointerup', (e) => this.#up(e));
    canvas.addEventListener('pointercancel', (e) => this.#up(e));
  }

  setImage(image, width, height) {
    this.image = image;
    this.canvas.width = width;
    this.canvas.height = height;
    this.selected = -1;
    this.liveHandles = null;
    this.draw();
  }

  setZoom(percent, width) {
    this.canvas.style.width = `${Math.round((width * percent) / 100)}px`;
  }

  #pos(e) {
    const { state } = this.context();
    return clientToImage(e.clientX, e.clientY, this.canvas.getBoundingClientRect(), state.width, state.height);
  }

  #radiusPx() {
    // Hit radius in image pixels for ~10 CSS pixels on screen.
    const rect = this.canvas.getBoundingClientRect();
    return (10 * this.canvas.width) / Math.max(rect.width, 1);
  }

  #down(e) {
    const { state, tool, brush, locked } = this.context();
    if (locked || !this.image) return;
    this.canvas.setPointerCapture(e.pointerId);
    const p = this.#pos(e);
    if (tool === 'points') {
      const hit = state.pointAt(p.x, p.y, this.#radiusPx());
      if (hit >= 0) {
        this.selected = hit;
        this.drag = { kind: 'point', index: hit, before: state.snapshot(), moved: false };
      } else {
        this.selected = state.addPoint(p.x, p.y);
        this.drag = null;
      }
    } else {
      const value = tool === 'brush' ? 255 : 0;
      const before = state.snapshot();
      state.paint(p.x, p.y, brush / 2, value);
      this.drag = { kind: 'paint', before, last: p, value };
    }
    this.draw();
    this.onChange();
  }

  #move(e) {
    if (!this.drag) return;
    const { state, brush } = this.context();
    const p = this.#pos(e);
    if (this.drag.kind === 'point') {
      state.movePoint(this.drag.index, p.x, p.y);
      this.drag.moved = true;
    } else {
      state.paintLine(this.drag.last.x, this.drag.last.y, p.x, p.y, brush / 2, this.drag.value);
      this.drag.last = p;
    }
    this.draw();
  }

  #key(e) {
    const { state, locked } = this.context();
    if (locked || !this.image || !state.points.length) return;
    const n = state.points.length;
    const step = e.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (e.key === ']' || e.key === '[') {
      this.selected = e.key === ']' ? (this.selected + 1) % n : (this.selected - 1 + n) % n;
    } else if (moves[e.key] && this.selected >= 0) {
      state.nudgePoint(this.selected, ...moves[e.key]);
    } else if ((e.key === 'Delete' || e.key === 'Backspace') && this.selected >= 0) {
      state.deletePair(this.selected);
      this.selected = -1;
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    this.draw();
    this.onChange();
    this.onSelect(this.describeSelection());
  }

  /** The selected point in words, for screen readers (and tests). */
  describeSelection() {
    const { state } = this.context();
    const p = state.points[this.selected];
    if (!p) return 'No point selected.';
    const kind = this.selected % 2 === 0 ? 'Handle' : 'Target';
    return `${kind} ${Math.floor(this.selected / 2) + 1} of ${Math.ceil(state.points.length / 2)} at x ${p.x}, y ${p.y}.`;
  }

  #up() {
    if (!this.drag) return;
    const { state } = this.context();
    if (this.drag.kind === 'paint' || this.drag.moved) state.commit(this.drag.before);
    this.drag = null;
    this.draw();
    this.onChange();
  }

  draw() {
    const { state } = this.context();
    const g = this.ctx2d;
    const { width, height } = this.canvas;
    g.clearRect(0, 0, width, height);
    if (!this.image) return;
    g.drawImage(this.image, 0, 0, width, height);
    // Mask: darken what may not change, tint what may.
    if (!state.maskIsEmpty()) {
      const overlay = g.getImageData(0, 0, width, height);
      const d = overlay.data;
      for (let i = 0; i < state.mask.length; i++) {
        if (state.mask[i]) {
          d[i * 4] = d[i * 4] * 0.7 + 255 * 0.3;
          d[i * 4 + 1] = d[i * 4 + 1] * 0.7 + 255 * 0.3;
        } else {
          d[i * 4] *= 0.55; d[i * 4 + 1] *= 0.55; d[i * 4 + 2] *= 0.55;
        }
      }
      g.putImageData(overlay, 0, 0);
    }
    const scale = Math.max(width, height) / 512;
    const r = Math.max(3, 5 * scale);
    const pts = state.points;
    for (let i = 0; i + 1 < pts.length; i += 2) arrow(g, pts[i], pts[i + 1], Math.max(1.5, 2 * scale));
    pts.forEach((p, i) => (i % 2 === 0 ? dot : square)(g, p, r, i % 2 === 0 ? '#e53935' : '#1e63e9', i === this.selected));
    if (this.liveHandles) {
      for (const [x, y] of this.liveHandles) dot(g, { x, y }, r * 0.8, '#ffeb3b', false);
    }
  }
}

function dot(g, p, r, color, selected) {
  g.beginPath();
  g.arc(p.x, p.y, r, 0, Math.PI * 2);
  g.fillStyle = color;
  g.fill();
  g.lineWidth = selected ? r * 0.6 : r * 0.25;
  g.strokeStyle = selected ? '#fff' : '#0008';
  g.stroke();
}

function square(g, p, r, color, selected) {
  g.beginPath();
  g.rect(p.x - r, p.y - r, 2 * r, 2 * r);
  g.fillStyle = color;
  g.fill();
  g.lineWidth = selected ? r * 0.6 : r * 0.25;
  g.strokeStyle = selected ? '#fff' : '#0008';
  g.stroke();
}

function arrow(g, a, b, w) {
  const len = Math.hypot(b.x - a.x, b.y - a.y);
  if (len < 1) return;
  const ang = Math.atan2(b.y - a.y, b.x - a.x);
  const tip = Math.min(len * 0.4, 6 * w);
  g.strokeStyle = '#fff';
  g.lineWidth = w;
  g.beginPath();
  g.moveTo(a.x, a.y);
  g.lineTo(b.x, b.y);
  for (const s of [-1, 1]) {
    g.moveTo(b.x, b.y);
    g.lineTo(b.x - tip * Math.cos(ang + s * 0.5), b.y - tip * Math.sin(ang + s * 0.5));
  }
  g.stroke();
}
