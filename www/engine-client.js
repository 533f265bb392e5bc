// Main-thread side of the engine worker: promise-based calls, progress events, and a clear
// error when the worker itself dies. The worker owns the wasm engine; this thread only draws.

export class EngineClient {
  /** @param {URL|string} workerUrl */
  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Set();
    this.worker = new Worker(workerUrl, { type: 'module' });
    this.worker.addEventListener('message', (e) => this.#onMessage(e.data));
    this.worker.addEventListener('error', (e) => {
      e.preventDefault();
      this.#failAll(`The engine worker failed to start: ${e.message || 'unknown error'}`);
    });
  }

  /** Calls an engine method in the worker. Rejects with an Error carrying the engine's message. */
  call(method, params = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, params });
    });
  }

  /** Subscribes to worker events (`{ event, ... }`); returns an unsubscribe function. */
  onEvent(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  terminate() {
    this.worker.terminate();
    this.#failAll('The engine was stopped.');
  }

  #onMessage(msg) {
    if (msg.event) {
      for (const l of this.listeners) l(msg);
      return;
    }
    const call = this.pending.get(msg.id);
    if (!call) return;
    this.pending.delete(msg.id);
    if (msg.ok) call.resolve(msg.result);
    else call.reject(Object.assign(new Error(msg.error), { kind: msg.kind, code: msg.code }));
  }

  #failAll(message) {
    for (const { reject } of this.pending.values()) reject(Object.assign(new Error(message), { kind: 'crashed', code: 'crashed' }));
    this.pending.clear();
    for (const l of this.listeners) l({ event: 'crashed', message });
  }
}
