// Model weights for the engine worker: a diffusers-layout model read from a URL prefix (HTTP
// Range requests, tensor-aligned chunks of at most 64 MiB, each cached in IndexedDB with its
// SHA-256) or from files picked on disk. Chunks go to the GPU one at a time, so the model never
// sits in memory whole. A reload continues from the first chunk not yet cached; a cached chunk
// whose hash no longer matches is fetched again; when storage runs out the model still loads
// (from the network, uncached) and the caller is told; so does it where the browser allows no
// storage at all (private windows, blocked site data). A download writes its model record
// first, so a partial one is listed (with its size), resumable and deletable.
//
// Over a real network: a server that ignores Range is detected from the status before any body
// is read (never 1.7 GB to get an 8-byte header); 4xx answers are not retried and say what
// they mean (401/403: a token or a gated model, 404: no such file); a request the browser
// blocks (CORS, or a Content-Security-Policy without the host in connect-src) says so.

import { sha256Hex, fileKey, modelFileList } from './weights-plan.js';

const DB_NAME = 'gooddrag-weights';
const DB_VERSION = 1;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let dbPromise = null;
export function openDb() {
  dbPromise ??= new Promise((resolve, reject) => {
    const open = indexedDB.open(DB_NAME, DB_VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore('chunks'); // key `${fileKey}#${index}` → { bytes, sha256 }
      db.createObjectStore('files'); // key fileKey → { length, header, text?, chunks }
      db.createObjectStore('models', { keyPath: 'id' }); // { id, label, files, bytes, complete, updatedAt }
    };
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  return dbPromise;
}

async function get(store, key) {
  const db = await openDb();
  return request(db.transaction(store).objectStore(store).get(key));
}

async function put(store, value, key) {
  const db = await openDb();
  const tx = db.transaction(store, 'readwrite');
  const done = new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException('aborted', 'AbortError'));
  });
  tx.objectStore(store).put(value, key);
  return done;
}

/** Cached models: [{ id, label, bytes, complete, updatedAt }]; none where storage is unavailable. */
export async function listModels() {
  let db;
  try { db = await openDb(); } catch { return []; }
  return request(db.transaction('models').objectStore('models').getAll());
}

/** Whether IndexedDB can be used here (it throws or fails to open in private windows and when
 * the user blocks site data). */
async function storageAvailable() {
  try {
    await openDb();
    return true;
  } catch {
    dbPromise = null;
    return false;
  }
}

// URLs the Content-Security-Policy blocked (a blocked fetch looks like any network failure).
const cspBlocked = new Set();
self.addEventListener?.('securitypolicyviolation', (e) => { if (e.blockedURI) cspBlocked.add(new URL(e.blockedURI, self.location?.href).origin); });

/** Reads at most `limit` bytes of a response body; null if the body is longer (then cancelled). */
async function readAtMost(res, limit) {
  const reader = res.body.getReader();
  const parts = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > limit) { await reader.cancel(); return null; }
    parts.push(value);
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.byteLength; }
  return out.buffer;
}

/** Deletes a cached model and every chunk of its files. */
export async function deleteModel(id) {
  const db = await openDb();
  const model = await get('models', id);
  const tx = db.transaction(['models', 'files', 'chunks'], 'readwrite');
  for (const key of model?.files ?? []) {
    tx.objectStore('files').delete(key);
    tx.objectStore('chunks').delete(IDBKeyRange.bound(`${key}#`, `${key}#\uffff`));
  }
  tx.objectStore('models').delete(id);
  await new Promise((resolve, reject) => { tx.oncomplete = resolve; tx.onerror = () => reject(tx.error); });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A file of a URL-prefix source. Retries what may pass on a retry (a dropped connection, 5xx,
 * 408, 429) with backoff; a refusal (other 4xx) is reported at once. */
function urlFile(url, signal) {
  const fetchOk = async (init) => {
    let last;
    let blocked = false;
    for (let attempt = 0; attempt < 4; attempt++) {
      if (signal?.aborted) throw new DOMException('The download was cancelled.', 'AbortError');
      let res;
      try {
        res = await fetch(url, { ...init, signal, credentials: 'omit', referrerPolicy: 'no-referrer' });
      } catch (e) {
        if (e.name === 'AbortError') throw e;
        // A TypeError without a response: offline, DNS, a reset connection — or a request the
        // browser blocked (CORS, CSP), which it does not tell scripts apart.
        last = e;
        blocked = e instanceof TypeError;
        if (cspBlocked.has(new URL(url).origin)) break;
        await sleep(300 * 2 ** attempt);
        continue;
      }
      if (res.status === 404) return null;
      if (res.status === 401 || res.status === 403) {
        res.body?.cancel();
        throw new Error(`${url} answered ${res.status}: this model needs a Hugging Face token or is gated (accept its licence on huggingface.co), or the server refuses this page. Use another source, or download the folder and pick it from disk.`);
      }
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
        res.body?.cancel();
        throw new Error(`${url} answered ${res.status}: the server refused the request (not retried).`);
      }
      if (!res.ok) {
        res.body?.cancel();
        last = new Error(`HTTP ${res.status}`);
        blocked = false;
        await sleep(300 * 2 ** attempt);
        continue;
      }
      return res;
    }
    const origin = new URL(url).origin;
    if (cspBlocked.has(origin)) {
      throw new Error(`This page's Content-Security-Policy does not allow ${origin}: add it to connect-src (in the page's <meta http-equiv="Content-Security-Policy"> and the server's header) to load models from there.`);
    }
    if (blocked && (self.navigator?.onLine ?? true)) {
      // A dropped connection and a blocked request look the same to a script: say both.
      throw new Error(`Could not download ${url}: the connection failed, or the browser blocked the request (the host must allow this page to read it — CORS: Access-Control-Allow-Origin — and be listed in the page's Content-Security-Policy connect-src). Check the connection and press Load again: finished chunks are kept.`);
    }
    throw new Error(`Could not download ${url} (${last?.message ?? 'network error'}). Check the connection and press Load again: finished chunks are kept.`);
  };
  return {
    name: url,
    async text() {
      const res = await fetchOk({});
      return res ? res.text() : null;
    },
    async range(start, end) {
      const res = await fetchOk({ headers: { Range: `bytes=${start}-${end - 1}` } });
      if (!res) return null;
      let buf;
      if (res.status === 206) {
        buf = await res.arrayBuffer();
      } else {
        // The server ignored the Range header and is sending the whole file: accept it only when
        // the whole file is what was asked for, never read further.
        const whole = start === 0 ? await readAtMost(res, end) : (res.body?.cancel(), null);
        if (whole === null || whole.byteLength !== end) {
          throw new Error(`${url}: the server ignored the Range request (it answered ${res.status} with the whole file), so the weights cannot be read in chunks; nothing more was downloaded. Serve the model from a server with HTTP Range support (Hugging Face, a CDN, most static servers).`);
        }
        buf = whole;
      }
      const total = Number(res.headers.get('Content-Range')?.split('/')[1] ?? NaN);
      return { bytes: buf.slice(0, end - start), total };
    },
  };
}

/** A file picked on disk. */
function localFile(file) {
  return {
    name: file?.name,
    async text() { return file ? file.text() : null; },
    async range(start, end) {
      if (!file) return null;
      return { bytes: await file.slice(start, end).arrayBuffer(), total: file.size };
    },
  };
}

/**
 * Loads a model into the engine.
 * source: { kind: 'url', id, label, base, vaeBase? } or { kind: 'files', id, label, files: { [relPath]: File } }.
 * onEvent({ type: 'download', file, done, total, rate, eta, cached }) / ({ type: 'warning', message }).
 */
export async function loadModel(engine, source, { onEvent = () => {}, signal } = {}) {
  let cacheable = source.kind === 'url';
  if (cacheable && !(await storageAvailable())) {
    cacheable = false;
    onEvent({ type: 'warning', message: 'This browser does not let the page store data (a private window, or site data blocked): the model loads from the network without being saved, and is downloaded again next time.' });
  }
  let cacheOff = !cacheable;
  const open = (rel) => {
    if (source.kind === 'files') return localFile(source.files[rel]);
    const base = rel.startsWith('vae/') && source.vaeBase ? source.vaeBase : source.base;
    const path = rel.startsWith('vae/') && source.vaeBase ? rel.slice(4) : rel;
    return urlFile(new URL(path, base).href, signal);
  };
  const keyOf = (rel) => fileKey(source.id, rel);
  const cachedFile = async (rel) => (cacheable ? get('files', keyOf(rel)) : undefined);
  const store = async (storeName, value, key) => {
    if (cacheOff) return;
    try {
      await put(storeName, value, key);
    } catch (e) {
      if (e?.name === 'QuotaExceededError' || /quota/i.test(String(e?.message))) {
        cacheOff = true;
        onEvent({ type: 'warning', message: 'Browser storage is full: the model is loading from the network without being saved, and will be downloaded again next time. Free space or delete cached models to keep it.' });
      } else throw e;
    }
  };

  // 1. The small files (configs, tokenizer), cached as text.
  const texts = {};
  for (const { rel, required } of modelFileList().text) {
    let text = (await cachedFile(rel))?.text;
    if (text === undefined) {
      text = await open(rel).text();
      if (text !== null) await store('files', { text }, keyOf(rel));
    }
    if (text === null && required) throw new Error(`The model source has no ${rel} (no such file at ${open(rel).name}): it must be a diffusers Stable Diffusion folder.`);
    texts[rel] = text ?? undefined;
  }
  engine.beginModel({
    unetConfig: texts['unet/config.json'],
    vaeConfig: texts['vae/config.json'],
    textEncoderConfig: texts['text_encoder/config.json'],
    vocab: texts['tokenizer/vocab.json'],
    merges: texts['tokenizer/merges.txt'],
    tokenizerConfig: texts['tokenizer/tokenizer_config.json'],
    specialTokensMap: texts['tokenizer/special_tokens_map.json'],
    schedulerConfig: texts['scheduler/scheduler_config.json'],
  });

  // 2. Weights, chunk by chunk. fp16 files are preferred when the source has them.
  const files = [];
  for (const { part, candidates } of modelFileList().weights) {
    let found = null;
    for (const rel of candidates) {
      const meta = await cachedFile(rel);
      if (meta?.header) { found = { rel, meta }; break; }
      const first = await open(rel).range(0, 8);
      if (first) { found = { rel, first }; break; }
    }
    if (!found) throw new Error(`The model source has no ${candidates.join(' or ')}.`);
    let { meta } = found;
    if (!meta) {
      const headerLength = engine.weightsHeaderLength(new Uint8Array(found.first.bytes));
      const head = await open(found.rel).range(0, headerLength);
      meta = { length: found.first.total, header: head.bytes };
    }
    const plan = engine.planWeights(part, found.rel, new Uint8Array(meta.header), meta.length);
    meta.chunks = plan.length;
    await store('files', meta, keyOf(found.rel));
    files.push({ part, rel: found.rel, plan, length: meta.length });
  }
  const total = files.reduce((s, f) => s + f.length, 0);
  // The model record first: an interrupted download is listed (and deletable) with its size.
  const record = { id: source.id, label: source.label, files: [...modelFileList().text.map((t) => keyOf(t.rel)), ...files.map((f) => keyOf(f.rel))], bytes: total };
  if (cacheable && !cacheOff && !(await get('models', source.id))?.complete) {
    await store('models', { ...record, complete: false, updatedAt: Date.now() });
  }
  let done = 0;
  let downloaded = 0;
  const started = performance.now();
  for (const f of files) {
    for (const chunk of f.plan) {
      if (signal?.aborted) throw new DOMException('The download was cancelled.', 'AbortError');
      const key = `${keyOf(f.rel)}#${chunk.index}`;
      let bytes = null;
      let fromCache = false;
      if (cacheable) {
        const hit = await get('chunks', key);
        if (hit && hit.bytes.byteLength === chunk.end - chunk.start && (await sha256Hex(hit.bytes)) === hit.sha256) {
          bytes = hit.bytes;
          fromCache = true;
        } else if (hit) {
          onEvent({ type: 'warning', message: `A cached piece of ${f.rel} was damaged and is downloaded again.` });
        }
      }
      if (!bytes) {
        const got = await open(f.rel).range(chunk.start, chunk.end);
        if (!got || got.bytes.byteLength !== chunk.end - chunk.start) throw new Error(`${f.rel}: the download was cut short; press Load again to resume.`);
        bytes = got.bytes;
        downloaded += bytes.byteLength;
        await store('chunks', { bytes, sha256: await sha256Hex(bytes) }, key);
      }
      engine.loadWeightsChunk(f.part, chunk.index, new Uint8Array(bytes));
      done += chunk.end - chunk.start;
      const seconds = (performance.now() - started) / 1000;
      const rate = downloaded / Math.max(seconds, 1e-3);
      onEvent({ type: 'download', file: f.rel, done, total, rate, eta: rate > 0 ? (total - done) / Math.max(rate, 1) : 0, cached: fromCache });
    }
  }
  engine.finishModel();
  if (cacheable && !cacheOff) {
    await store('models', { ...record, complete: true, updatedAt: Date.now() });
  }
  return { bytes: total, downloaded, cached: cacheable && !cacheOff };
}
