// The engine worker: loads the wasm core once and answers calls from engine-client.js.
// Calls are processed one at a time (the engine is not re-entrant); a wasm trap marks the
// engine as crashed so later calls fail with a clear message instead of undefined behaviour.

import loadWasm, * as engine from './pkg/gooddrag.js';

const methods = {
  init: () => engine.init(),
  runProbe: async () => {
    const started = performance.now();
    const result = await engine.runProbe();
    return { ...result, elapsedMs: performance.now() - started };
  },
};

let crashed = null;
const ready = loadWasm().catch((e) => {
  crashed = `The engine could not be loaded (${e.message}). Reload the page; if it persists, this browser may not support WebAssembly.`;
});

let queue = Promise.resolve();

self.addEventListener('message', (e) => {
  const { id, method, params } = e.data;
  queue = queue.then(() => handle(id, method, params));
});

async function handle(id, method, params) {
  await ready;
  if (crashed) return self.postMessage({ id, ok: false, kind: 'crashed', error: crashed });
  const fn = methods[method];
  if (!fn) return self.postMessage({ id, ok: false, kind: 'invalid', error: `unknown engine method: ${method}` });
  try {
    self.postMessage({ id, ok: true, result: await fn(params) });
  } catch (err) {
    const trapped = err instanceof WebAssembly.RuntimeError;
    if (trapped) crashed = `The engine crashed (${err.message}). Reload the page to start it again.`;
    self.postMessage({ id, ok: false, kind: trapped ? 'crashed' : 'engine', error: trapped ? crashed : String(err?.message ?? err) });
  }
}
