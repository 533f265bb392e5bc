#!/usr/bin/env node
// Static server for the app: serves www/ at / and pkg/ at /pkg/, bound to 127.0.0.1 only,
// with correct MIME types (application/wasm for streaming compilation), HTTP Range requests
// (206 / 416) for weight files, a strict Content-Security-Policy and no caching of the shell
// (the service worker will own caching). No dependencies: Node's standard library only.
//
// Usage: node scripts/serve.mjs [--port 8080] [--root DIR] [--mount /prefix=DIR ...]

import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.webmanifest': 'application/manifest+json',
};

export const CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self'",
  // The default model source (Hugging Face, which redirects to its CDNs); nothing else.
  "connect-src 'self' https://huggingface.co https://*.huggingface.co https://*.hf.co",
  "img-src 'self' blob: data:",
  "style-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'self'",
].join('; ');

/**
 * Parses a `Range` header for a file of `size` bytes.
 * Returns null when there is no usable header (serve the whole file), `{ start, end }`
 * (inclusive) for one satisfiable range, or 'unsatisfiable' (answer 416).
 * Multi-range requests are served as the whole file, which RFC 9110 allows.
 */
export function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null;
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  let start;
  let end;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return null; // invalid: ignore the header
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return { start, end };
}

/** Maps a URL path onto one of the mounts, refusing anything that escapes its directory. */
export function resolvePath(urlPath, mounts) {
  return resolveMount(urlPath, mounts)?.file ?? null;
}

/** The mount a URL path falls in (longest prefix first, so /pkg/ wins over /) and its file:
 * `{ mount, file }`, or null for a bad path or one that escapes its directory. */
function resolveMount(urlPath, mounts) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath.split('?')[0]);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const sorted = [...mounts].sort((x, y) => y.prefix.length - x.prefix.length);
  for (const mount of sorted) {
    const { prefix, dir } = mount;
    if (decoded === prefix.replace(/\/$/, '') || decoded.startsWith(prefix)) {
      const rel = decoded.slice(prefix.length);
      const file = path.resolve(dir, '.' + path.posix.normalize('/' + rel));
      if (file !== dir && !file.startsWith(dir + path.sep)) return null;
      return { mount, file };
    }
  }
  return null;
}

/**
 * Creates the server; `mounts` is a list of `{ prefix, dir }` with absolute dirs. A mount may
 * also behave like hosts the app meets on real networks: `ranges: false` answers every request
 * with the whole file and 200 (a server without Range support), `status: 403` refuses every
 * request (a gated model without a token).
 */
export function createStaticServer({ mounts, log = () => {} }) {
  return createServer(async (req, res) => {
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
      log(`${req.method} ${req.url} ${status}`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    const found = resolveMount(req.url, mounts);
    if (!found) return send(404, 'not found\n');
    const { mount } = found;
    let { file } = found;
    if (mount.status) return send(mount.status, `refused (${mount.status})\n`, { 'Content-Security-Policy': CSP });
    let stat;
    try {
      stat = await fs.stat(file);
      if (stat.isDirectory()) {
        file = path.join(file, 'index.html');
        stat = await fs.stat(file);
      }
    } catch {
      return send(404, 'not found\n');
    }
    if (!stat.isFile()) return send(404, 'not found\n');
    const headers = {
      'Content-Type': MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
      'Accept-Ranges': mount.ranges === false ? 'none' : 'bytes',
      'Cache-Control': 'no-cache',
      'Last-Modified': stat.mtime.toUTCString(),
      'Content-Security-Policy': CSP,
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
    };
    const range = mount.ranges === false ? null : parseRange(req.headers.range, stat.size);
    if (range === 'unsatisfiable') {
      return send(416, 'range not satisfiable\n', { 'Content-Range': `bytes */${stat.size}` });
    }
    const { start, end } = range ?? { start: 0, end: stat.size - 1 };
    const length = stat.size === 0 ? 0 : end - start + 1;
    headers['Content-Length'] = String(length);
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${stat.size}`;
    res.writeHead(range ? 206 : 200, headers);
    log(`${req.method} ${req.url} ${range ? 206 : 200} ${length}`);
    if (req.method === 'HEAD' || length === 0) return res.end();
    const stream = createReadStream(file, { start, end });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  });
}

/** The app's standard mounts: www/ at /, pkg/ at /pkg/, relative to the repository root. */
export function appMounts(root) {
  return [
    { prefix: '/', dir: path.resolve(root, 'www') },
    { prefix: '/pkg/', dir: path.resolve(root, 'pkg') },
  ];
}

/** Starts a server on 127.0.0.1 (port 0 = any free port); resolves to `{ server, url }`. */
export function listen(server, port = 0) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port: actual } = server.address();
      resolve({ server, url: `http://127.0.0.1:${actual}` });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const root = path.resolve(opt('--root', path.join(path.dirname(fileURLToPath(import.meta.url)), '..')));
  const mounts = appMounts(root);
  args.forEach((a, i) => {
    if (a === '--mount') {
      const [prefix, dir] = args[i + 1].split('=');
      mounts.push({ prefix: prefix.endsWith('/') ? prefix : prefix + '/', dir: path.resolve(dir) });
    }
  });
  const { url } = await listen(createStaticServer({ mounts, log: (l) => console.log(l) }), Number(opt('--port', '8080')));
  console.log(`GoodDrag Web is served at ${url}/ (Ctrl+C to stop)`);
}
