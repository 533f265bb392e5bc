// <good-drag>: the editor as an embeddable element. Shadow DOM (its styles come from widget.css
// inside the shadow root: nothing leaks in or out), one shared engine worker and weight cache for
// every widget on the page (api.js).
//
// Attributes: model-src (diffusers URL prefix; default SD 1.5 fp16 + ft-mse VAE), preset, src
// (image URL), working-size (a long side in pixels, default 512, or "native"; the result is
// the image at its own size with the edit composited in either way), precision ("auto": f16
// on a GPU with shader-f16; "f32"; "f16"), memory-budget ("auto": the least-memory plan, as
// WebGPU tells no memory size; or a size such as "8GiB" this GPU may use: faster, same result). Methods: setImage(image), setPoints([[x, y], …]), setMask(Uint8Array | null),
// run() → Promise<result>, cancel(), result (last result or null), config (field overrides).
// Events (bubbling, composed): progress {detail: event}, result {detail: result}, error
// {detail: {message}}, ready {detail: adapter report}.

import { GoodDrag, toRgb, workingSize } from './api.js';
import { EditState, rgbToRgba } from './edit-state.js';
import { CanvasView } from './canvas-view.js';

const TEMPLATE = `
  <link rel="stylesheet" href="${new URL('./widget.css', import.meta.url).href}">
  <div class="gd" part="root">
    <div class="bar">
      <label><input type="radio" name="tool" value="points" checked> Points</label>
      <label><input type="radio" name="tool" value="brush"> Mask</label>
      <label><input type="radio" name="tool" value="eraser"> Erase</label>
      <button type="button" class="undo">Undo</button>
      <button type="button" class="run" disabled>Run</button>
      <button type="button" class="cancel" hidden>Cancel</button>
    </div>
    <div class="stage"><canvas class="canvas"></canvas><p class="empty">No image</p></div>
    <progress class="progress" max="1" value="0" aria-label="Edit progress" hidden></progress>
    <p class="status" aria-live="polite"></p>
  </div>`;

export class GoodDragElement extends HTMLElement {
  static observedAttributes = ['src', 'model-src', 'preset'];

  constructor() {
    super();
    this.attachShadow({ mode: 'open' }).innerHTML = TEMPLATE;
    const $ = (sel) => this.shadowRoot.querySelector(sel);
    this.$ = $;
    this.state = null;
    this.image = null;
    this.running = false;
    this.config = null;
    this._result = null;
    this.view = new CanvasView($('.canvas'), () => ({
      state: this.state ?? new EditState(1, 1),
      tool: this.shadowRoot.querySelector('input[name="tool"]:checked').value,
      brush: 20,
      locked: this.running,
    }), () => this.#refresh());
    $('.run').addEventListener('click', () => this.run().catch(() => {}));
    $('.cancel').addEventListener('click', () => this.cancel());
    $('.undo').addEventListener('click', () => { if (this.state?.undo()) { this.view.draw(); this.#refresh(); } });
  }

  get api() {
    const src = this.getAttribute('model-src') ?? undefined;
    if (!this._api || this._apiSrc !== src) { this._api = new GoodDrag({ modelSrc: src }); this._apiSrc = src; }
    return this._api;
  }

  connectedCallback() {
    this.api.ready().then((a) => this.#emit('ready', a), (e) => this.#fail(e));
    if (this.getAttribute('src') && !this.image) this.setImage(this.getAttribute('src')).catch((e) => this.#fail(e));
  }

  attributeChangedCallback(name, old, value) {
    if (name === 'src' && value && value !== old && this.isConnected) this.setImage(value).catch((e) => this.#fail(e));
  }

  /** The last result, or null. */
  get result() { return this._result; }

  /** Shows an image (Blob, URL, ImageBitmap, <img>, canvas, ImageData); clears mask and points. */
  async setImage(image) {
    const { width, height, rgb, bitmap } = await toRgb(image);
    this.image = { width, height, rgb };
    this.state = new EditState(width, height);
    const c = new OffscreenCanvas(width, height);
    c.getContext('2d').putImageData(new ImageData(rgbToRgba(rgb), width, height), 0, 0);
    this.view.setImage(bitmap ?? c, width, height);
    this.$('.empty').hidden = true;
    this._result = null;
    this.#refresh();
  }

  /** Replaces the points: [[x, y], …], handle/target alternating, image pixels. */
  setPoints(points) {
    if (!this.state) throw new Error('Set an image first.');
    this.state.loadPointsJson(JSON.stringify({ points }));
    this.view.draw();
    this.#refresh();
  }

  /** Replaces the mask: one byte per pixel (> 0 = may change), or null for none. */
  setMask(mask) {
    if (!this.state) throw new Error('Set an image first.');
    if (mask && mask.length !== this.state.mask.length) throw new Error(`The mask needs ${this.state.mask.length} values.`);
    const before = this.state.snapshot();
    this.state.mask = mask ? Uint8Array.from(mask, (v) => (v > 0 ? 255 : 0)) : new Uint8Array(this.state.mask.length);
    this.state.commit(before);
    this.view.draw();
    this.#refresh();
  }

  /** Runs GoodDrag on the current image, mask and points; resolves to the result. */
  async run() {
    if (!this.state || this.state.pairPoints().length < 2) throw this.#fail(new Error('Add an image and at least one handle/target pair.'));
    this.running = true;
    this.#refresh();
    this.$('.progress').hidden = false;
    this.$('.status').textContent = 'Loading the model…';
    try {
      await this.api.loadModel({ onProgress: (e) => { if (e.type === 'download' && e.total) { this.$('.progress').value = e.done / e.total; } } });
      this.$('.status').textContent = 'Editing…';
      const r = await this.api.edit({
        image: new ImageData(rgbToRgba(this.image.rgb), this.image.width, this.image.height),
        points: this.state.pairPoints(),
        mask: this.state.maskIsEmpty() ? null : this.state.mask,
        preset: this.getAttribute('preset') ?? undefined,
        config: this.config ?? undefined,
        size: workingSize(this.getAttribute('working-size')),
        precision: this.getAttribute('precision') ?? undefined,
        memoryBudget: this.getAttribute('memory-budget') ?? undefined,
        onProgress: (p) => {
          if (p.step && p.of) this.$('.progress').value = p.step / p.of;
          if (p.handles) { this.view.liveHandles = p.handles; this.view.draw(); }
          this.#emit('progress', p);
        },
      });
      this._result = r;
      const c = new OffscreenCanvas(r.width, r.height);
      c.getContext('2d').putImageData(new ImageData(rgbToRgba(r.rgb), r.width, r.height), 0, 0);
      this.view.setImage(c, r.width, r.height);
      this.$('.status').textContent = `Done: ${r.supervisionSteps} steps.`;
      this.#emit('result', r);
      return r;
    } catch (e) {
      this.$('.status').textContent = e.kind === 'cancelled' ? 'Cancelled.' : 'Failed.';
      throw this.#fail(e);
    } finally {
      this.running = false;
      this.view.liveHandles = null;
      this.view.draw();
      this.$('.progress').hidden = true;
      this.#refresh();
    }
  }

  /** Cancels a running edit. */
  cancel() { return this.api.cancel(); }

  #refresh() {
    this.$('.run').disabled = this.running || !this.state || this.state.pairPoints().length < 2;
    this.$('.cancel').hidden = !this.running;
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  #fail(e) {
    this.#emit('error', { message: e.message, kind: e.kind ?? 'error', code: e.code ?? null });
    return e;
  }
}

if (!customElements.get('good-drag')) customElements.define('good-drag', GoodDragElement);
