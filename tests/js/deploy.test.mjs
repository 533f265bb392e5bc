// What a copy of www/ + pkg/ on any static host needs: the Content-Security-Policy in the pages
// themselves, a service worker that caches the whole shell under the build's id, and a build id
// that pkg/build-id.js and the engine agree on (scripts/build-id.mjs reads it from the wasm).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CSP } from '../../scripts/serve.mjs';
import { customSection } from '../../scripts/build-id.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WWW = path.join(ROOT, 'www');

test('the pages carry the server\'s Content-Security-Policy (less frame-ancestors, which a meta element cannot)', () => {
  const expected = CSP.split('; ').filter((d) => !d.startsWith('frame-ancestors')).join('; ');
  for (const page of ['index.html', 'bench.html']) {
    const html = fs.readFileSync(path.join(WWW, page), 'utf8');
    const m = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)">/);
    assert.ok(m, `${page} has a CSP meta element`);
    assert.equal(m[1], expected, page);
  }
});

test('the service worker caches every file of the shell, under a cache named after the build id', () => {
  const sw = fs.readFileSync(path.join(WWW, 'sw.js'), 'utf8');
  const shell = new Set([...sw.match(/const SHELL = \[([^\]]+)\]/)[1].matchAll(/'\.\/([^']*)'/g)].map((m) => m[1]));
  const served = fs.readdirSync(WWW).filter((f) => /\.(html|js|css|webmanifest)$/.test(f) && f !== 'sw.js');
  for (const f of served) assert.ok(shell.has(f), `${f} is in the service worker's shell`);
  for (const f of ['pkg/gooddrag.js', 'pkg/gooddrag_bg.wasm', 'pkg/build-id.js']) assert.ok(shell.has(f), f);
  assert.match(sw, /importScripts\('\.\/pkg\/build-id\.js'\)/);
  assert.match(sw, /const CACHE = `gooddrag-shell-\$\{self\.GOODDRAG_BUILD_ID\}`/);
});

test('custom sections are read from a wasm module', () => {
  const name = new TextEncoder().encode('gooddrag-build-id');
  const id = new TextEncoder().encode('0123456789abcdef');
  const other = [0, 4, 1, 0x61, 7, 7]; // custom section "a" with two bytes
  const ours = [0, 1 + name.length + id.length, name.length, ...name, ...id];
  const bytes = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 1, 0, ...other, ...ours]);
  assert.deepEqual([...customSection(bytes, 'gooddrag-build-id')], [...id]);
  assert.deepEqual([...customSection(bytes, 'a')], [7, 7]);
  assert.equal(customSection(bytes, 'missing'), null);
});

test('pkg/build-id.js carries the id compiled into the engine', { skip: !fs.existsSync(path.join(ROOT, 'pkg/gooddrag_bg.wasm')) && 'no web build (scripts/build-web.sh)' }, () => {
  const js = fs.readFileSync(path.join(ROOT, 'pkg/build-id.js'), 'utf8');
  const id = js.match(/self\.GOODDRAG_BUILD_ID = "([0-9a-f]{16})";/)?.[1];
  assert.ok(id, js);
  // wasm-bindgen keeps the section: the module the browser loads carries the same id.
  const section = customSection(fs.readFileSync(path.join(ROOT, 'pkg/gooddrag_bg.wasm')), 'gooddrag-build-id');
  assert.equal(new TextDecoder().decode(section), id);
});
