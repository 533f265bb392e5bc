// Service worker: keeps the app shell (HTML, JS, CSS, the wasm engine) for offline use.
// Same-origin GETs go to the network first and fall back to the cache, so an online visit
// always gets the current build and an offline one the last it saw. Model weights are never
// touched here: they live in IndexedDB (weights.js), and Range requests pass straight through.
// The cache is named after the build id (build.rs, written to pkg/build-id.js by
// scripts/build-web.sh): a new deployment changes this worker's imported script, so the browser
// installs it, it caches the new shell whole under a new name and deletes the old one.

importScripts('./pkg/build-id.js');

const CACHE = `gooddrag-shell-${self.GOODDRAG_BUILD_ID}`;
const SHELL = [
  './', './index.html', './style.css', './app.js', './engine-client.js', './worker.js', './format.js',
  './edit-state.js', './canvas-view.js', './config-form.js', './gif.js', './weights.js', './weights-plan.js',
  './api.js', './widget.js', './widget.css',
  './bench.html', './bench.js', './manifest.webmanifest',
  './pkg/gooddrag.js', './pkg/gooddrag_bg.wasm', './pkg/build-id.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('gooddrag-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

const SHELL_URLS = new Set(SHELL.map((p) => new URL(p, self.registration.scope).href));

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const url = new URL(req.url);
  url.search = '';
  if (req.method !== 'GET' || req.headers.has('range') || !SHELL_URLS.has(url.href)) return;
  event.respondWith((async () => {
    try {
      const res = await fetch(req);
      if (res.ok && res.status === 200) {
        const copy = res.clone();
        caches.open(CACHE).then((c) => c.put(req, copy)).catch(() => {});
      }
      return res;
    } catch (err) {
      const hit = await caches.match(req, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
