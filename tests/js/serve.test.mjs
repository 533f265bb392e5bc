// The static server: Range parsing, path containment, and real HTTP responses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseRange, resolvePath, createStaticServer, listen, CSP } from '../../scripts/serve.mjs';

test('parseRange handles full, open-ended, suffix and invalid ranges', () => {
  assert.equal(parseRange(undefined, 100), null);
  assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-500', 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=95-200', 100), { start: 95, end: 99 });
  assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable');
  assert.equal(parseRange('bytes=-0', 100), 'unsatisfiable');
  assert.equal(parseRange('bytes=5-2', 100), null);
  assert.equal(parseRange('bytes=0-1,5-6', 100), null);
  assert.equal(parseRange('items=0-1', 100), null);
});

test('resolvePath keeps requests inside their mount', () => {
  const mounts = [{ prefix: '/', dir: '/srv/www' }, { prefix: '/pkg/', dir: '/srv/pkg' }];
  assert.equal(resolvePath('/index.html', mounts), '/srv/www/index.html');
  assert.equal(resolvePath('/pkg/a.wasm?v=1', mounts), '/srv/pkg/a.wasm');
  assert.equal(resolvePath('/../etc/passwd', mounts), '/srv/www/etc/passwd');
  assert.equal(resolvePath('/pkg/..%2f..%2fetc/passwd', mounts), '/srv/pkg/etc/passwd');
  assert.equal(resolvePath('/%E0%A4%A', mounts), null);
  assert.equal(resolvePath('/a%00b', mounts), null);
});

test('server answers ranges, HEAD, MIME types and security headers over HTTP', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gooddrag-serve-'));
  mkdirSync(path.join(dir, 'pkg'));
  const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
  writeFileSync(path.join(dir, 'pkg', 'w.safetensors'), bytes);
  writeFileSync(path.join(dir, 'pkg', 'm.wasm'), Buffer.from([0, 97, 115, 109]));
  writeFileSync(path.join(dir, 'index.html'), '<!doctype html>');
  const { server, url } = await listen(createStaticServer({ mounts: [{ prefix: '/', dir }, { prefix: '/pkg/', dir: path.join(dir, 'pkg') }] }));
  t.after(() => server.close());
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);

  let r = await fetch(`${url}/pkg/w.safetensors`, { headers: { Range: 'bytes=100-199' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers.get('content-range'), 'bytes 100-199/1000');
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(100, 200));

  r = await fetch(`${url}/pkg/w.safetensors`, { headers: { Range: 'bytes=-8' } });
  assert.equal(r.status, 206);
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(992));

  r = await fetch(`${url}/pkg/w.safetensors`, { headers: { Range: 'bytes=1000-' } });
  assert.equal(r.status, 416);
  assert.equal(r.headers.get('content-range'), 'bytes */1000');
  await r.arrayBuffer();

  r = await fetch(`${url}/pkg/w.safetensors`, { method: 'HEAD' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-length'), '1000');
  assert.equal(r.headers.get('accept-ranges'), 'bytes');

  r = await fetch(`${url}/pkg/m.wasm`);
  assert.equal(r.headers.get('content-type'), 'application/wasm');
  await r.arrayBuffer();

  r = await fetch(`${url}/`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/html/);
  assert.equal(r.headers.get('content-security-policy'), CSP);
  await r.text();

  r = await fetch(`${url}/missing.js`);
  assert.equal(r.status, 404);
  await r.text();

  r = await fetch(`${url}/`, { method: 'POST' });
  assert.equal(r.status, 405);
  await r.text();
});
