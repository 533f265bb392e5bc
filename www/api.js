// GoodDrag's JavaScript API, for pages that drive the engine without the app's UI (the
// <good-drag> element uses it too). Every GoodDrag instance on a page shares one engine worker
// and the one IndexedDB weight cache; the engine holds one model at a time, so instances with the
// same model source share it and calls from all instances run one after another.
//
//   import { GoodDrag } from './api.js';
//   const gd = new GoodDrag({ modelSrc: 'https://…/stable-diffusion-v1-5/resolve/main/' });
//   await gd.ready();                                   // WebGPU adapter report
//   await gd.loadModel({ onProgress });                 // cached after the first time
//   const r = await gd.edit({ image, points, mask, preset, config, size, onProgress });
//   // r: { width, height, rgb (Uint8Array): the photo at its own size with the edit composited
//   //      in; working: { width, height, rgb }: the edit at the working size; finalHandles,
//   //      newPoints (photo pixels), timings, stop, … }

import { EngineClient } from './engine-client.js';
import { DEFAULT_SOURCE, urlSource } from './weights-plan.js';
import { rgbaToRgb } from './edit-state.js';

let shared = null; // { client, init: Promise, model: string|null, loading: Promise|null }

function engine() {
  if (!shared) {
    const client = new EngineClient(new URL('./worker.js', import.meta.url));
    shared = { client, init: client.call('init'), model: null, loading: null, listeners: new Set() };
    client.onEvent((e) => { for (const l of shared.listeners) l(e); });
  }
  return shared;
}

/** A working size from an attribute, a setting or a number: a long side in pixels or 'native'. */
export function workingSize(value) {
  if (value === undefined || value === null || value === '') return undefined;
  return value === 'native' ? 'native' : Number(value);
}

/** Decodes a Blob / URL / ImageBitmap / HTMLImageElement / HTMLCanvasElement / ImageData to RGB. */
export async function toRgb(image) {
  if (image instanceof ImageData) return { width: image.width, height: image.height, rgb: rgbaToRgb(image.data) };
  let source = image;
  if (typeof image === 'string' || image instanceof URL) {
    const res = await fetch(image);
    if (!res.ok) throw new Error(`Could not load the image ${image} (HTTP ${res.status}).`);
    source = await res.blob();
  }
  // EXIF orientation applied: points refer to the upright image.
  const bitmap = source instanceof Blob ? await createImageBitmap(source, { imageOrientation: 'from-image' }) : source;
  // An <img> has a layout size (`width`, CSS-scaled or 0 before layout) and its pixels' size
  // (`naturalWidth`): the edit needs the pixels.
  const width = bitmap.naturalWidth ?? bitmap.width;
  const height = bitmap.naturalHeight ?? bitmap.height;
  const c = new OffscreenCanvas(width, height);
  c.getContext('2d').drawImage(bitmap, 0, 0);
  return { width, height, rgb: rgbaToRgb(c.getContext('2d').getImageData(0, 0, width, height).data), bitmap };
}

export class GoodDrag {
  /** @param {{ modelSrc?: string }} options — a diffusers URL prefix; default SD 1.5 fp16 + ft-mse VAE. */
  constructor({ modelSrc } = {}) {
    this.source = modelSrc ? urlSource(new URL(modelSrc, location.href).href) : DEFAULT_SOURCE;
  }

  /** Resolves to the WebGPU adapter report, or rejects with a message a user can act on. */
  ready() {
    return engine().init;
  }

  /** Loads this instance's model (a no-op when the shared engine already holds it). */
  async loadModel({ onProgress } = {}) {
    const e = engine();
    await e.init;
    while (e.loading) await e.loading.catch(() => {});
    if (e.model === this.source.id) return;
    const listener = (ev) => { if (ev.event === 'model') onProgress?.(ev); };
    e.listeners.add(listener);
    e.loading = e.client.call('loadModel', { source: this.source });
    try {
      await e.loading;
      e.model = this.source.id;
    } catch (err) {
      e.model = null;
      throw err;
    } finally {
      e.loading = null;
      e.listeners.delete(listener);
    }
  }

  /**
   * Runs an edit. image: Blob, URL, ImageBitmap, HTMLImageElement, canvas or ImageData;
   * points: [[x, y], …] handle/target pairs in image pixels; mask: Uint8Array (width·height,
   * > 0 = may change) or null; preset / config: DragConfig preset name and field overrides;
   * size: the working size, a long side in pixels (default 512) or 'native' (the image's own
   * size, up to 1024×1024 pixels); precision: 'auto' (default: f16 on a GPU with shader-f16),
   * 'f32' or 'f16'; memoryBudget: 'auto' (default: WebGPU tells no memory size, so the
   * least-memory plan) or a size such as '8GiB' the edit may use on this GPU (a larger budget
   * trades memory for speed; results are the same). onProgress receives the engine's progress events
   * ({ phase, … }). The edit always runs on this instance's model: the request names it, and
   * the engine loads it first if another instance's model was loaded in between.
   */
  async edit({ image, points, mask = null, preset, config, lora = 'train', size, precision, memoryBudget, onProgress } = {}) {
    await this.loadModel();
    const { width, height, rgb } = await toRgb(image);
    if (mask && mask.length !== width * height) throw new Error(`The mask has ${mask.length} values; the image needs ${width * height}.`);
    const e = engine();
    const tag = `${Date.now()}-${Math.random()}`;
    const listener = (ev) => { if (ev.event === 'progress' && ev.tag === tag) onProgress?.(ev.progress); };
    e.listeners.add(listener);
    try {
      const request = { width, height, rgb, mask, points, preset, config, lora, tag, size: workingSize(size), precision, memoryBudget };
      const r = await e.client.call('edit', { request, source: this.source });
      e.model = this.source.id;
      return r;
    } finally {
      e.listeners.delete(listener);
    }
  }

  /** Cancels the running edit or download (of any instance: the engine is shared). */
  cancel() {
    return engine().client.call('cancel');
  }
}
