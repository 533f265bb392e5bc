// Browsers without a usable WebGPU get a clear message, not a silent failure or a blank page.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, openPage, screenshot, INSECURE_HOST } from './harness.mjs';

const cases = [
  {
    name: 'a page served over plain http from another host (no navigator.gpu) says WebGPU needs a secure page',
    webgpu: true,
    url: (s) => s.url.replace('127.0.0.1', INSECURE_HOST),
    expected: /WebGPU is only available on secure pages/,
    shot: 'no-webgpu-insecure-context',
  },
  {
    name: 'a browser that offers no WebGPU adapter says so',
    webgpu: false,
    url: (s) => s.url,
    expected: /no GPU adapter is available/,
    shot: 'no-webgpu-adapter',
  },
];

for (const c of cases) {
  test(c.name, { timeout: 120_000 }, async () => {
    const server = await startServer();
    const browser = await launch({ webgpu: c.webgpu });
    try {
      const { page, log } = await openPage(browser.context, `${c.url(server)}/`);
      await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('app').dataset.state), null, { timeout: 60_000 });
      assert.equal(await page.getAttribute('#app', 'data-state'), 'error');
      assert.ok(await page.isVisible('#error'));
      assert.match(await page.textContent('#error'), c.expected);
      assert.ok(await page.isDisabled('#run-probe'));
      assert.ok(!(await page.isVisible('#adapter')), 'the empty adapter table stays hidden');
      await screenshot(page, c.shot);
      assert.deepEqual(log.panics, [], 'wasm panics in the console');
      assert.deepEqual(log.errors, [], 'page errors');
    } finally {
      await browser.close();
      await server.close();
    }
  });
}
