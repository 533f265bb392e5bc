// The benchmark page: runs `benchSynthetic` (src/bench.rs, the same code as the native
// `gooddrag bench-synthetic`) in the engine worker and shows per-phase time and memory.

import { EngineClient } from './engine-client.js';
import { formatBytes, formatDuration } from './format.js';

const $ = (id) => document.getElementById(id);
const page = $('bench');
const setState = (s) => { page.dataset.state = s; };
const client = new EngineClient();
let adapter = null;

client.onEvent((msg) => {
  if (msg.event === 'bench') $('status').textContent = `Running: ${msg.line}…`;
  if (msg.event === 'crashed') fail(msg.message);
});

function fail(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  setState('error');
}

/** Fetches the UNet, VAE and text encoder `config.json` under a diffusers folder URL. */
async function architectureFrom(base) {
  const prefix = base.endsWith('/') ? base : `${base}/`;
  const read = async (part) => {
    const url = new URL(`${part}/config.json`, prefix);
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res.text();
  };
  return {
    name: prefix,
    unetConfig: await read('unet'),
    vaeConfig: await read('vae'),
    textEncoderConfig: await read('text_encoder'),
  };
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function show(result) {
  const { report } = result;
  const rows = report.phases.map((p) => {
    const tr = document.createElement('tr');
    tr.append(
      cell(p.name),
      cell(formatDuration(p.millis / 1e3)),
      cell(String(p.countInEdit)),
      cell(formatDuration((p.millis * p.countInEdit) / 1e3)),
      cell(p.memory ? formatBytes(p.memory.reservedBytes) : 'n/a'),
      cell(p.memory?.largestSlicedAllocBytes ? formatBytes(p.memory.largestSlicedAllocBytes) : 'not reported'),
    );
    return tr;
  });
  $('phases').tBodies[0].replaceChildren(...rows);
  $('total').textContent = formatDuration(report.extrapolatedTotalMillis / 1e3);
  const size = report.latentSize * 8;
  $('summary').textContent = `${report.model} (${(report.unetParameters / 1e6).toFixed(1)} M UNet parameters), `
    + `${size} × ${size}, f32, gradient checkpointing ${report.checkpointing ? 'on' : 'off'}, on ${adapter.name || 'an unnamed adapter'} `
    + `(largest binding ${formatBytes(adapter.maxStorageBufferBindingSize)}).`;
  $('json').textContent = JSON.stringify(result, null, 2);
  $('results').hidden = false;
}

$('bench-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('error').hidden = true;
  $('run').disabled = true;
  $('cancel').disabled = false;
  setState('running');
  try {
    const request = { latent: Number($('latent').value), checkpointing: $('checkpointing').checked, warmUp: $('warm-up').checked };
    if (document.querySelector('input[name="arch"]:checked').value === 'url') {
      $('status').textContent = 'Reading the configs…';
      Object.assign(request, await architectureFrom($('arch-url').value));
    }
    $('status').textContent = 'Building the model…';
    const result = await client.call('benchSynthetic', { request });
    show(result);
    $('status').textContent = 'Done.';
    setState('done');
  } catch (err) {
    if (err.kind === 'cancelled') {
      $('status').textContent = 'Cancelled.';
      setState('ready');
    } else {
      $('status').textContent = '';
      fail(err.message);
    }
  } finally {
    $('run').disabled = false;
    $('cancel').disabled = true;
  }
});

$('cancel').addEventListener('click', () => {
  $('status').textContent = 'Cancelling after the current run…';
  client.call('cancel');
});

$('copy').addEventListener('click', () => navigator.clipboard?.writeText($('json').textContent));

try {
  adapter = await client.call('init');
  $('gpu-status').textContent = `${adapter.name || 'WebGPU adapter'} (${adapter.backend}, ${adapter.deviceType}), shader-f16 ${adapter.shaderF16 ? 'yes' : 'no'}, largest binding ${formatBytes(adapter.maxStorageBufferBindingSize)}.`;
  $('run').disabled = false;
  setState('ready');
} catch (e) {
  $('gpu-status').textContent = 'The engine cannot run here.';
  fail(e.message);
}
