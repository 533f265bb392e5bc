// The page: starts the engine worker, shows the GPU it found (or why there is none), and runs
// the device check on demand.

import { EngineClient } from './engine-client.js';
import { formatBytes } from './format.js';

const $ = (id) => document.getElementById(id);
const app = $('app');

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  $('gpu-status').textContent = 'The engine cannot run here.';
  app.dataset.state = 'error';
}

function showAdapter(a) {
  $('adapter-name').textContent = a.name || '(not disclosed by the browser)';
  $('adapter-backend').textContent = `${a.backend}, ${a.deviceType}`;
  $('adapter-f16').textContent = a.shaderF16 ? 'yes' : 'no (f32 compute)';
  $('adapter-buffer').textContent = formatBytes(a.maxBufferSize);
  $('adapter-binding').textContent = formatBytes(a.maxStorageBufferBindingSize);
  $('adapter').hidden = false;
  $('gpu-status').textContent = 'WebGPU is ready.';
}

const client = new EngineClient();
client.onEvent((e) => { if (e.event === 'crashed') showError(e.message); });

try {
  const adapter = await client.call('init');
  showAdapter(adapter);
  app.dataset.state = 'ready';
  $('run-probe').disabled = false;
} catch (e) {
  showError(e.message);
}

$('run-probe').addEventListener('click', async () => {
  const button = $('run-probe');
  button.disabled = true;
  $('probe-status').textContent = 'Running… (the first run compiles the GPU kernels)';
  app.dataset.state = 'probing';
  try {
    const r = await client.call('runProbe');
    const finite = r.output.every(Number.isFinite) && r.inputGrad.every(Number.isFinite);
    $('probe-status').textContent = finite
      ? `Done in ${(r.elapsedMs / 1000).toFixed(2)} s: loss ${r.loss.toFixed(6)}, ${r.inputGrad.length} gradient values.`
      : 'The GPU returned non-finite numbers: this device computes incorrectly.';
    $('probe-json').textContent = JSON.stringify(r);
    $('probe-details').hidden = false;
    app.dataset.state = finite ? 'probe-done' : 'error';
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
});
