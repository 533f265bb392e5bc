// The page in a real headless Chromium on a real WebGPU adapter (SwiftShader): the engine
// worker starts, reports a WebGPU adapter, and the device probe equals the native wgpu result.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, launch, openPage, screenshot } from './harness.mjs';

const BIN = process.env.GOODDRAG_BIN;

function relativeError(actual, reference) {
  assert.equal(actual.length, reference.length);
  const scale = Math.max(...reference.map(Math.abs), Number.MIN_VALUE);
  let diff = 0;
  for (let i = 0; i < actual.length; i++) diff = Math.max(diff, Math.abs(actual[i] - reference[i]));
  return diff / scale;
}

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launch({ webgpu: true });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('the worker initialises WebGPU and the probe equals the native wgpu result', { timeout: 300_000 }, async () => {
  assert.ok(BIN, 'GOODDRAG_BIN must point at the native gooddrag binary (scripts/test.sh sets it)');
  const native = JSON.parse(execFileSync(BIN, ['probe', '--device', 'wgpu', '--json'], { encoding: 'utf8' }));

  const { page, log } = await openPage(browser.context, `${server.url}/`);
  await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('app').dataset.state), null, { timeout: 120_000 });
  const state = await page.getAttribute('#app', 'data-state');
  assert.equal(state, 'ready', `engine did not start: ${await page.textContent('#error')}\n${log.console.join('\n')}`);
  assert.match(await page.textContent('#adapter-backend'), /^BrowserWebGpu,/);
  await screenshot(page, 'device-ready');

  await page.click('#run-probe');
  await page.waitForFunction(() => ['probe-done', 'error'].includes(document.getElementById('app').dataset.state), null, { timeout: 240_000 });
  assert.equal(await page.getAttribute('#app', 'data-state'), 'probe-done', await page.textContent('#error'));
  const browserResult = JSON.parse(await page.textContent('#probe-json'));
  await screenshot(page, 'device-check-done');

  // The adapter report from Rust, as the worker received it.
  const adapter = await page.evaluate(async () => {
    const { EngineClient } = await import('./engine-client.js');
    const c = new EngineClient();
    try {
      return await c.call('init');
    } finally {
      c.terminate();
    }
  });
  assert.equal(adapter.backend, 'BrowserWebGpu');
  assert.equal(typeof adapter.shaderF16, 'boolean');
  assert.ok(adapter.maxStorageBufferBindingSize >= 128 * 2 ** 20, JSON.stringify(adapter));
  assert.ok(adapter.maxBufferSize >= adapter.maxStorageBufferBindingSize, JSON.stringify(adapter));

  const outErr = relativeError(browserResult.output, native.result.output);
  const gradErr = relativeError(browserResult.inputGrad, native.result.inputGrad);
  console.log(`browser (${adapter.name || 'unnamed'}, f16 ${adapter.shaderF16}) vs native ${native.adapter.name}: output ${outErr.toExponential(2)}, input gradient ${gradErr.toExponential(2)}; probe ${browserResult.elapsedMs.toFixed(0)} ms in the browser`);
  assert.ok(outErr <= 1e-4, `output relative error ${outErr}`);
  assert.ok(gradErr <= 1e-4, `gradient relative error ${gradErr}`);
  assert.ok(Math.abs(browserResult.loss - native.result.loss) <= 1e-4 * Math.abs(native.result.loss));

  assert.deepEqual(log.errors, [], 'page errors');
  assert.deepEqual(log.panics, [], 'wasm panics in the console');
  const foreign = log.requests.filter((u) => !u.startsWith(server.url));
  assert.deepEqual(foreign, [], 'requests to other origins');
});
