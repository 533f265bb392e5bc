// The engine worker: loads the wasm core once and answers calls from engine-client.js.
// Calls are processed one at a time (the engine is not re-entrant), except `cancel`, which is
// handled at once so it can stop a running edit or download between two steps. A wasm trap
// marks the engine as crashed so later calls fail with a clear message.

import loadWasm, * as engine from './pkg/gooddrag.js';
import './pkg/build-id.js';
import { deleteModel, listModels, loadModel } from './weights.js';

let download = null; // AbortController of the running model load
let loaded = null; // id of the model the engine holds

const emit = (event, data) => self.postMessage({ event, ...data });

const methods = {
  init: () => engine.init(),
  runProbe: async () => {
    const started = performance.now();
    const result = await engine.runProbe();
    return { ...result, elapsedMs: performance.now() - started };
  },
  presets: () => engine.presets(),
  presetConfig: ({ name }) => engine.presetConfig(name),
  listModels: () => listModels(),
  deleteModel: ({ id }) => deleteModel(id),
  modelInfo: () => engine.modelInfo(),
  loadModel: async ({ source }) => {
    download = new AbortController();
    try {
      loaded = null;
      engine.unloadModel();
      const result = await loadModel(engine, source, { onEvent: (e) => emit('model', e), signal: download.signal });
      loaded = source.id;
      return result;
    } catch (e) {
      try { engine.unloadModel(); } catch { /* keep the first error */ }
      throw e;
    } finally {
      download = null;
    }
  },
  benchSynthetic: ({ request }) => engine.benchSynthetic(request, (line) => emit('bench', { line })),
  // `source` names the model the edit is for: calls run one at a time, so loading it here (when
  // another caller's model came in between) makes "this model, then this edit" atomic.
  edit: async ({ request, source }) => {
    if (source && source.id !== loaded) await methods.loadModel({ source });
    const result = await engine.edit(request, (p) => emit('progress', { tag: request.tag ?? null, progress: p }));
    return result;
  },
};

let crashed = null;
const ready = loadWasm().then(() => {
  // The JS and the engine must come from one build (a half-updated cache or CDN would pair an
  // old engine with new JS): the id in pkg/build-id.js is the one compiled into the engine.
  if (engine.buildId() !== self.GOODDRAG_BUILD_ID) {
    crashed = `This page's files come from two different versions (scripts ${self.GOODDRAG_BUILD_ID}, engine ${engine.buildId()}). Reload the page; if it persists, clear the site's data.`;
  }
}, (e) => {
  crashed = `The engine could not be loaded (${e.message}). Reload the page; if it persists, this browser may not support WebAssembly.`;
});

let queue = Promise.resolve();

self.addEventListener('message', (e) => {
  const { id, method, params } = e.data;
  if (method === 'cancel') {
    // Not queued: it must reach a running edit or download.
    ready.then(() => {
      if (!crashed) engine.cancelEdit();
      download?.abort();
      self.postMessage({ id, ok: true, result: null });
    });
    return;
  }
  queue = queue.then(() => handle(id, method, params));
});

async function handle(id, method, params) {
  await ready;
  if (crashed) return self.postMessage({ id, ok: false, kind: 'crashed', code: 'crashed', error: crashed });
  const fn = methods[method];
  if (!fn) return self.postMessage({ id, ok: false, kind: 'invalid', code: 'invalid-input', error: `unknown engine method: ${method}` });
  try {
    const result = await fn(params ?? {});
    const transfer = [result?.rgb?.buffer, result?.working?.rgb?.buffer].filter(Boolean);
    self.postMessage({ id, ok: true, result }, transfer);
  } catch (err) {
    // Errors from the engine carry `code`, the Rust error's kind (src/error.rs `Error::kind`):
    // decisions are made on it, never on the message text. A trap (a Rust panic) has no code.
    const code = err instanceof WebAssembly.RuntimeError ? 'trap' : err?.code ?? (err?.name === 'AbortError' ? 'cancelled' : 'js');
    // A lost GPU device cannot be used again: treat it like a crash so the page offers a restart.
    const trapped = code === 'trap' || code === 'device-lost';
    if (trapped) {
      crashed = code === 'trap'
        ? `The engine crashed (${err.message}). Reload the page to start it again.`
        : err.message;
    }
    const kind = trapped ? 'crashed' : code === 'cancelled' ? 'cancelled' : 'engine';
    self.postMessage({ id, ok: false, kind, code, error: trapped ? crashed : String(err?.message ?? err) });
  }
}
