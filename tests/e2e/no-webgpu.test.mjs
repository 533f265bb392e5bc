// Browsers without WebGPU get a clear message, not a silent failure or a blank page.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, openPage, screenshot } from './harness.mjs';

for (const [mode, expected, shot] of [
  [false, /WebGPU is not available in this browser/, 'no-webgpu'],
  ['no-adapter', /no GPU adapter is available/, 'no-webgpu-adapter'],
]) {
  test(`without WebGPU (${mode === false ? 'API switched off' : 'no adapter offered'}) the page says so`, { timeout: 120_000 }, async () => {
    const server = await startServer();
    const browser = await launch({ webgpu: mode });
    try {
      const { page, log } = await openPage(browser.context, `${server.url}/`);
      await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('app').dataset.state), null, { timeout: 60_000 });
      assert.equal(await page.getAttribute('#app', 'data-state'), 'error');
      assert.ok(await page.isVisible('#error'));
      assert.match(await page.textContent('#error'), expected);
      assert.ok(await page.isDisabled('#run-probe'));
      await screenshot(page, shot);
      assert.deepEqual(log.panics, [], 'wasm panics in the console');
      assert.deepEqual(log.errors, [], 'page errors');
    } finally {
      await browser.close();
      await server.close();
    }
  });
}
