// The page: engine worker start-up, model loading (cached in IndexedDB by the worker), the
// photo/mask/points editor, settings, the run with live progress, and the result. This thread
// only draws; everything heavy runs in the worker.

import { EngineClient } from './engine-client.js';
import { formatBytes, formatDuration } from './format.js';
import { EditState, rgbaToRgb, rgbToRgba } from './edit-state.js';
import { CanvasView } from './canvas-view.js';
import { DEFAULT_SOURCE, relativePaths, urlSource } from './weights-plan.js';
import { encodeGif } from './gif.js';
import { SETTING_GROUPS, describeSetting, flattenConfig, unflattenConfig } from './config-form.js';
import { workingSize } from './api.js';

const $ = (id) => document.getElementById(id);
const app = $('app');
let client = new EngineClient();
let lastSource = null; // the model source last loaded, for restarting after a crash

let adapter = null;
let modelReady = false;
let running = false;
let state = null; // EditState of the open photo
let photo = null; // { bitmap, rgb, width, height, name }
let result = null; // { rgb, width, height, previews: [{ width, height, rgb }] }
let presetDefaults = null;
// Whether this engine has finished a run: before that, the first UNet pass compiles every GPU
// program (minutes on a slow or software GPU) and no step can report progress.
let engineWarm = false;
let lastProgressAt = 0;
// Cancel first asks the engine to stop between two steps; a step that does not end within
// CANCEL_GRACE_MS (the first one compiles the GPU programs and cannot be interrupted) is stopped
// by restarting the engine: the model reloads from this browser's storage, the photo, mask and
// points stay.
const CANCEL_GRACE_MS = 3000;
let cancelTimer = null;
let forcedStop = false;

function setState(s) { app.dataset.state = s; }

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

function clearError() { $('error').hidden = true; }

// ---------------------------------------------------------------------------------------------
// Engine start-up
// ---------------------------------------------------------------------------------------------

function showAdapter(a) {
  $('adapter-name').textContent = a.name || '(not disclosed by the browser)';
  $('adapter-backend').textContent = `${a.backend}, ${a.deviceType}`;
  $('adapter-f16').textContent = a.shaderF16 ? 'yes' : 'no (f32 compute)';
  $('adapter-buffer').textContent = formatBytes(a.maxBufferSize);
  $('adapter-binding').textContent = formatBytes(a.maxStorageBufferBindingSize);
  $('adapter').hidden = false;
  $('gpu-status').textContent = 'WebGPU is ready.';
}

function onEngineEvent(e) {
  if (e.event === 'crashed') {
    showError(`${e.message} Restart the engine to continue: the model reloads from this browser's cache, your photo, mask and points stay.`);
    $('restart-engine').hidden = false;
    modelReady = false;
    updateRunButton();
    setState('error');
  } else if (e.event === 'model') onModelEvent(e);
  else if (e.event === 'progress') onProgress(e.progress);
}
let unsubscribe = client.onEvent(onEngineEvent);

// After a crash or a lost GPU device: a fresh worker and device; the model reloads from
// IndexedDB (no download), the editor state is kept.
async function restartEngine() {
  $('restart-engine').hidden = true;
  clearError();
  unsubscribe();
  client.terminate();
  client = new EngineClient();
  unsubscribe = client.onEvent(onEngineEvent);
  running = false;
  engineWarm = false;
  modelReady = false;
  updateRunButton();
  try {
    adapter = await client.call('init');
    showAdapter(adapter);
    setState('ready');
    if (lastSource) $('load-model').click();
  } catch (e) {
    showError(e.message);
    setState('error');
  }
}

async function start() {
  try {
    adapter = await client.call('init');
    showAdapter(adapter);
    setState('ready');
    $('run-probe').disabled = false;
    $('load-model').disabled = false;
  } catch (e) {
    showError(e.message);
    $('gpu-status').textContent = 'The engine cannot run here.';
    setState('error');
    return;
  }
  await refreshCached();
  await showStorage();
  const names = await client.call('presets');
  $('preset').replaceChildren(...names.map((n) => new Option(n, n)));
  await applyPreset('gooddrag');
}

$('run-probe').addEventListener('click', async () => {
  const button = $('run-probe');
  button.disabled = true;
  $('probe-status').textContent = 'Running… (the first run compiles the GPU kernels)';
  setState('probing');
  try {
    const r = await client.call('runProbe');
    const finite = r.output.every(Number.isFinite) && r.inputGrad.every(Number.isFinite);
    $('probe-status').textContent = finite
      ? `Done in ${(r.elapsedMs / 1000).toFixed(2)} s: loss ${r.loss.toFixed(6)}, ${r.inputGrad.length} gradient values.`
      : 'The GPU returned non-finite numbers: this device computes incorrectly.';
    $('probe-json').textContent = JSON.stringify(r);
    $('probe-json').hidden = false;
    setState(finite ? 'probe-done' : 'error');
  } catch (e) {
    showError(e.message);
    setState('error');
  } finally {
    button.disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

$('default-label').textContent = DEFAULT_SOURCE.label;

async function showStorage() {
  if (!navigator.storage?.estimate) return;
  try {
    const { usage = 0, quota = 0 } = await navigator.storage.estimate();
    const persisted = (await navigator.storage.persisted?.()) ? 'kept until you delete it' : 'may be evicted under storage pressure';
    $('storage').textContent = `Storage: ${formatBytes(usage)} used of ${formatBytes(quota)} available to this site (${persisted}).`;
  } catch {
    // Site data blocked: the loader says so when a model loads.
    $('storage').textContent = 'Storage: this browser does not let the page store data; models are not kept.';
  }
}

async function refreshCached() {
  const models = await client.call('listModels');
  const list = $('cached-models');
  if (!models.length) {
    list.replaceChildren(Object.assign(document.createElement('li'), { className: 'muted', textContent: 'none' }));
    return;
  }
  list.replaceChildren(...models.map((m) => {
    const li = document.createElement('li');
    li.dataset.id = m.id;
    li.append(`${m.label} — ${formatBytes(m.bytes)}${m.complete ? '' : ' (partial download: Load resumes it)'} `);
    const del = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Delete', className: 'small' });
    del.addEventListener('click', async () => {
      await client.call('deleteModel', { id: m.id });
      await refreshCached();
      await showStorage();
    });
    li.append(del);
    return li;
  }));
}

function chosenSource() {
  const kind = document.querySelector('input[name="source"]:checked').value;
  if (kind === 'default') return DEFAULT_SOURCE;
  if (kind === 'url') {
    const url = $('model-url').value.trim();
    if (!/^https?:\/\//.test(url)) throw new Error('Enter the URL prefix of a diffusers model folder (https://…/).');
    return urlSource(new URL(url, location.href).href);
  }
  const picked = [...$('model-files').files];
  if (!picked.length) throw new Error('Pick the model folder first.');
  const files = relativePaths(picked.map((f) => ({ path: f.webkitRelativePath || f.name, file: f })));
  return { kind: 'files', id: `local:${picked[0].webkitRelativePath?.split('/')[0] ?? 'files'}`, label: 'Local folder', files };
}

function onModelEvent(e) {
  if (e.type === 'download') {
    $('model-progress').hidden = false;
    $('model-bar').value = e.total ? e.done / e.total : 0;
    const rate = e.rate > 0 ? `, ${formatBytes(e.rate)}/s, ${formatDuration(e.eta)} left` : '';
    $('model-progress-text').textContent = `${formatBytes(e.done)} of ${formatBytes(e.total)}${e.cached ? ' (from this browser)' : rate}`;
  } else if (e.type === 'warning') {
    $('model-warning').textContent = e.message;
    $('model-warning').hidden = false;
  }
}

$('load-model').addEventListener('click', async () => {
  clearError();
  let source;
  try { source = chosenSource(); } catch (e) { showError(e.message); return; }
  $('model-warning').hidden = true;
  $('model-progress').hidden = true;
  $('load-model').disabled = true;
  $('cancel-load').hidden = false;
  $('model-status').textContent = 'Loading the model…';
  setState('loading-model');
  modelReady = false;
  updateRunButton();
  try {
    if (source.kind === 'url') await navigator.storage?.persist?.();
    lastSource = source;
    const r = await client.call('loadModel', { source });
    modelReady = true;
    $('model-status').textContent = `Model ready: ${formatBytes(r.bytes)} on the GPU${r.downloaded ? `, ${formatBytes(r.downloaded)} downloaded` : ', nothing downloaded'}.`;
    setState('model-ready');
  } catch (e) {
    $('model-status').textContent = e.kind === 'cancelled' ? 'Loading cancelled; press Load model to resume.' : 'The model could not be loaded.';
    if (e.kind !== 'cancelled') showError(e.message);
    setState('model-error');
  } finally {
    $('load-model').disabled = false;
    $('cancel-load').hidden = true;
    updateRunButton();
    await refreshCached();
    await showStorage();
  }
});

$('cancel-load').addEventListener('click', () => client.call('cancel'));
$('restart-engine').addEventListener('click', restartEngine);

// ---------------------------------------------------------------------------------------------
// Photo, mask, points
// ---------------------------------------------------------------------------------------------

const tool = () => document.querySelector('input[name="tool"]:checked').value;
const view = new CanvasView($('canvas'), () => ({ state, tool: tool(), brush: Number($('brush-size').value), locked: running }), () => onEdited(), (text) => { $('point-status').textContent = text; });

function onEdited() {
  if (!state) return;
  const pairs = state.pairPoints().length / 2;
  const masked = state.mask.reduce((n, v) => n + (v > 0), 0);
  $('edit-info').textContent = `${photo.width}×${photo.height} · ${pairs} point pair${pairs === 1 ? '' : 's'}${state.points.length % 2 ? ' (+ a handle without target)' : ''} · ${masked ? `${((100 * masked) / state.mask.length).toFixed(1)} % may change` : 'no mask: the whole image may change'}`;
  $('delete-pair').disabled = view.selected < 0 || view.selected >= state.points.length;
  updateRunButton();
}

function updateRunButton() {
  $('run-edit').disabled = running || !modelReady || !state || state.pairPoints().length < 2;
}

async function openImage(blob, name = 'photo') {
  if (!blob?.type?.startsWith('image/')) { showError('That is not an image file.'); return; }
  clearError();
  let bitmap;
  try { bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' }); } catch { showError('This image could not be decoded.'); return; }
  const { width, height } = bitmap;
  if (width < 8 || height < 8) { showError(`The image is ${width}×${height} pixels; at least 8×8 is needed.`); return; }
  const c = new OffscreenCanvas(width, height);
  c.getContext('2d').drawImage(bitmap, 0, 0);
  const rgba = c.getContext('2d').getImageData(0, 0, width, height).data;
  photo = { bitmap, rgb: rgbaToRgb(rgba), width, height, name };
  state = new EditState(width, height);
  $('drop-hint').hidden = true;
  $('canvas').hidden = false;
  view.setImage(bitmap, width, height);
  fitZoom();
  $('result').hidden = true;
  result = null;
  onEdited();
}

function fitZoom() {
  if (!photo) return;
  const avail = $('drop').clientWidth - 8;
  const fit = Math.max(25, Math.min(400, Math.floor((100 * avail) / photo.width)));
  $('zoom').value = String(fit);
  view.setZoom(fit, photo.width);
}

$('image-file').addEventListener('change', (e) => { const f = e.target.files[0]; if (f) openImage(f, f.name); e.target.value = ''; });
$('drop').addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('over'); });
$('drop').addEventListener('dragleave', () => $('drop').classList.remove('over'));
$('drop').addEventListener('drop', (e) => {
  e.preventDefault();
  $('drop').classList.remove('over');
  const f = [...e.dataTransfer.files].find((x) => x.type.startsWith('image/'));
  if (f) openImage(f, f.name);
});
document.addEventListener('paste', (e) => {
  const item = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith('image/'));
  if (item) openImage(item.getAsFile(), 'pasted');
});
$('zoom').addEventListener('input', () => photo && view.setZoom(Number($('zoom').value), photo.width));
$('undo').addEventListener('click', () => { if (state?.undo()) { view.selected = -1; view.draw(); onEdited(); } });
$('redo').addEventListener('click', () => { if (state?.redo()) { view.selected = -1; view.draw(); onEdited(); } });
$('clear-mask').addEventListener('click', () => { state?.clearMask(); view.draw(); onEdited(); });
$('clear-points').addEventListener('click', () => { state?.clearPoints(); view.selected = -1; view.draw(); onEdited(); });
$('delete-pair').addEventListener('click', () => { state?.deletePair(view.selected); view.selected = -1; view.draw(); onEdited(); });
document.addEventListener('keydown', (e) => {
  if (!state || running || e.target.matches('input, textarea, select')) return;
  if ((e.key === 'Delete' || e.key === 'Backspace') && view.selected >= 0) {
    state.deletePair(view.selected); view.selected = -1; view.draw(); onEdited(); e.preventDefault();
  } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') {
    $(e.shiftKey ? 'redo' : 'undo').click(); e.preventDefault();
  } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'y') {
    $('redo').click(); e.preventDefault();
  }
});

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

async function applyPreset(name) {
  presetDefaults = await client.call('presetConfig', { name });
  // One fieldset per phase, each field with a readable label, its unit or range and a hint;
  // the input keeps the official field name as data-key (and as its tooltip).
  const groups = new Map(SETTING_GROUPS.map((g) => {
    const fs = document.createElement('fieldset');
    fs.className = 'settings-group';
    fs.append(Object.assign(document.createElement('legend'), { textContent: g }));
    return [g, fs];
  }));
  for (const { key, value } of flattenConfig(presetDefaults)) {
    if (key === 'prompt') continue;
    const about = describeSetting(key);
    const id = `setting-${key.replace('.', '-')}`;
    const input = document.createElement(typeof value === 'string' && key === 'patch_weight' ? 'select' : 'input');
    input.dataset.key = key;
    input.id = id;
    input.title = key;
    if (typeof value === 'boolean') { input.type = 'checkbox'; input.checked = value; }
    else if (typeof value === 'number') { input.type = 'number'; input.step = 'any'; input.value = String(value); }
    else if (input.tagName === 'SELECT') { input.append(new Option('two-r', 'two-r'), new Option('two-r-plus-one', 'two-r-plus-one')); input.value = value; }
    else { input.type = 'text'; input.value = String(value); }
    const row = document.createElement('div');
    row.className = 'setting';
    const label = Object.assign(document.createElement('label'), { htmlFor: id, textContent: about.label });
    const unit = Object.assign(document.createElement('span'), { className: 'unit', textContent: about.unit ?? '' });
    const hint = Object.assign(document.createElement('p'), { className: 'hint', id: `${id}-hint`, textContent: about.hint });
    input.setAttribute('aria-describedby', hint.id);
    row.append(label, input, unit, hint);
    groups.get(about.group).append(row);
  }
  $('advanced-fields').replaceChildren(...[...groups.values()].filter((fs) => fs.children.length > 1));
}

function currentConfig() {
  const entries = [...$('advanced-fields').querySelectorAll('[data-key]')].map((el) => ({
    key: el.dataset.key,
    value: el.type === 'checkbox' ? el.checked : el.type === 'number' ? Number(el.value) : el.value,
  }));
  const config = unflattenConfig(entries);
  config.prompt = $('prompt').value;
  return config;
}

$('preset').addEventListener('change', () => applyPreset($('preset').value));
$('reset-advanced').addEventListener('click', () => applyPreset($('preset').value));

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

const PHASES = [
  ['lora', 'Fine-tune LoRA on the photo'],
  ['invert', 'DDIM inversion'],
  ['reference', 'Reference trajectory'],
  ['drag', 'Drag (motion supervision + tracking)'],
  ['denoise', 'Denoise (Latent-MasaCtrl)'],
  ['decode', 'Decode'],
];

function resetPhases() {
  $('phases').replaceChildren(...PHASES.map(([id, label]) => {
    const li = document.createElement('li');
    li.dataset.phase = id;
    li.innerHTML = `<span class="phase-label"></span> <progress max="1" value="0"></progress> <span class="phase-text"></span>`;
    li.querySelector('.phase-label').textContent = label;
    li.querySelector('progress').setAttribute('aria-label', label);
    return li;
  }));
  $('previews').replaceChildren();
}

function setPhase(id, fraction, text = '') {
  const li = $('phases').querySelector(`[data-phase="${id}"]`);
  if (!li) return;
  li.querySelector('progress').value = fraction;
  li.querySelector('.phase-text').textContent = text;
  li.classList.toggle('done', fraction >= 1);
}

let previews = [];

function onProgress(p) {
  app.dataset.lastProgress = p.phase;
  lastProgressAt = performance.now();
  switch (p.phase) {
    case 'lora': setPhase('lora', p.step / p.of, `step ${p.step}/${p.of}, loss ${p.loss.toFixed(4)}`); break;
    case 'invert': setPhase('lora', 1); setPhase('invert', p.step / p.of, `${p.step}/${p.of}`); break;
    case 'reference': setPhase('reference', p.step / p.of, `${p.step}/${p.of}`); break;
    case 'drag':
      setPhase('drag', (p.timestep - 1) / p.of, `timestep ${p.timestep}/${p.of}, step ${p.step}, loss ${p.loss.toFixed(3)}`);
      view.liveHandles = p.handles; view.draw();
      break;
    case 'tracked': view.liveHandles = p.handles; view.draw(); break;
    case 'dragStopped': setPhase('drag', 1, p.reason === 'reached' ? 'all handles reached their targets' : 'stopped: handles no longer move'); break;
    case 'preview': {
      previews.push({ width: p.width, height: p.height, rgb: new Uint8Array(p.rgb) });
      const c = document.createElement('canvas');
      c.width = p.width; c.height = p.height;
      c.getContext('2d').putImageData(new ImageData(rgbToRgba(new Uint8Array(p.rgb)), p.width, p.height), 0, 0);
      c.title = `After drag timestep ${p.timestep}`;
      $('previews').append(c);
      break;
    }
    case 'denoise': setPhase('drag', 1); setPhase('reference', 1); setPhase('denoise', p.step / p.of, `${p.step}/${p.of}`); break;
    case 'decode': setPhase('decode', 1); break;
    default: break;
  }
}

$('run-edit').addEventListener('click', async () => {
  clearError();
  let config;
  try { config = currentConfig(); } catch (e) { showError(e.message); return; }
  running = true;
  updateRunButton();
  $('cancel-edit').hidden = false;
  $('run-status').textContent = 'Running…';
  resetPhases();
  previews = [];
  setState('running');
  forcedStop = false;
  const request = {
    width: photo.width,
    height: photo.height,
    rgb: photo.rgb,
    mask: state.maskIsEmpty() ? null : state.mask,
    points: state.pairPoints(),
    config,
    size: workingSize($('working-size').value),
    precision: $('precision').value,
    memoryBudget: $('memory-budget').value,
  };
  const started = performance.now();
  lastProgressAt = started;
  // Never a silent wait: elapsed time, and what the engine is doing when no step reports.
  const tick = () => {
    const now = performance.now();
    const quiet = (now - lastProgressAt) / 1000;
    let what = '';
    if (!engineWarm && quiet > 2) what = ' Preparing GPU programs (the first run only; minutes on a slow GPU)…';
    else if (quiet > 10) what = ` No step has finished for ${formatDuration(quiet)}.`;
    $('run-activity').textContent = `${formatDuration((now - started) / 1000)} elapsed.${what}`;
  };
  tick();
  const ticker = setInterval(tick, 1000);
  try {
    const r = await client.call('edit', { request });
    engineWarm = true;
    result = { ...r, previews: previews.slice() };
    for (const hit of r.cacheHits) setPhase(hit === 'lora' ? 'lora' : 'invert', 1, 'reused from the last edit of this photo');
    showResult(r, (performance.now() - started) / 1000);
    $('run-status').textContent = `Done in ${formatDuration((performance.now() - started) / 1000)} (${r.precision}, ${r.backwardPlan} backward)${r.cacheHits.length ? `; reused: ${r.cacheHits.join(', ')}` : ''}.`;
    setState('done');
  } catch (e) {
    if (forcedStop) {
      $('run-status').textContent = 'Cancelled. The engine was restarted to stop the running step; the model reloads from this browser\'s storage and your photo, mask and points stay.';
      setState('cancelled');
    } else if (e.kind === 'cancelled') {
      $('run-status').textContent = 'Cancelled. The model stays loaded; run again when ready.';
      setState('cancelled');
    } else {
      $('run-status').textContent = 'The edit failed.';
      showError(e.message);
      setState(e.kind === 'crashed' ? 'error' : 'edit-error');
    }
  } finally {
    clearInterval(ticker);
    clearTimeout(cancelTimer);
    $('run-activity').textContent = '';
    running = false;
    view.liveHandles = null;
    view.draw();
    $('cancel-edit').hidden = true;
    updateRunButton();
  }
});

$('cancel-edit').addEventListener('click', () => {
  $('run-status').textContent = 'Cancelling…';
  // Rejected when the engine is restarted below: nothing to report then.
  client.call('cancel').catch(() => {});
  clearTimeout(cancelTimer);
  cancelTimer = setTimeout(() => {
    if (!running) return;
    // The running step did not yield: stop the engine (the pending edit rejects at once).
    forcedStop = true;
    $('run-status').textContent = 'Cancelling: restarting the engine…';
    restartEngine();
  }, CANCEL_GRACE_MS);
});

// ---------------------------------------------------------------------------------------------
// Result
// ---------------------------------------------------------------------------------------------

function showResult(r, seconds) {
  const after = $('after');
  const before = $('before');
  for (const c of [after, before]) { c.width = r.width; c.height = r.height; }
  after.getContext('2d').putImageData(new ImageData(rgbToRgba(r.rgb), r.width, r.height), 0, 0);
  before.getContext('2d').drawImage(photo.bitmap, 0, 0);
  $('result').hidden = false;
  $('slider').value = '50';
  updateSlider();
  const moved = r.finalHandles.map(([x, y]) => `[${x.toFixed(1)}, ${y.toFixed(1)}]`).join(', ');
  const working = r.working.width === r.width && r.working.height === r.height ? '' : ` (edited at ${r.working.width}×${r.working.height})`;
  $('result-info').textContent = `${r.width}×${r.height}${working}, ${r.supervisionSteps} supervision steps, final handles ${moved}; ${seconds.toFixed(1)} s.`;
  $('download-working').textContent = `Download the working-size PNG (${r.working.width}×${r.working.height})`;
}

function updateSlider() {
  $('before-clip').style.clipPath = `inset(0 ${100 - Number($('slider').value)}% 0 0)`;
}
$('slider').addEventListener('input', updateSlider);

function download(blob, name) {
  const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

const baseName = () => (photo?.name ?? 'photo').replace(/\.[^.]+$/, '');

$('download-png').addEventListener('click', () => $('after').toBlob((b) => download(b, `${baseName()}-gooddrag.png`), 'image/png'));
$('download-working').addEventListener('click', () => {
  if (!result) return;
  const { width, height, rgb } = result.working;
  const c = new OffscreenCanvas(width, height);
  c.getContext('2d').putImageData(new ImageData(rgbToRgba(rgb), width, height), 0, 0);
  c.convertToBlob({ type: 'image/png' }).then((b) => download(b, `${baseName()}-gooddrag-${width}x${height}.png`));
});
$('working-size').addEventListener('change', () => {
  const v = $('working-size').value;
  $('working-size-hint').textContent = v === 'native'
    ? 'The edit runs at the photo\'s own size: large photos need much more GPU memory and are refused over 1024×1024 pixels.'
    : Number(v) > 512
      ? `Above 512 px the edit needs more GPU memory (${v} px: about ${((Number(v) / 512) ** 2).toFixed(1)}×) and leaves the resolution Stable Diffusion 1.5 was trained at.`
      : 'The edit runs at this size; the result is your photo at its own resolution with only the edited region replaced.';
});
$('export-points').addEventListener('click', () => state && download(new Blob([state.toPointsJson()], { type: 'application/json' }), 'points.json'));
$('import-points').addEventListener('change', async (e) => {
  const f = e.target.files[0];
  e.target.value = '';
  if (!f || !state) return;
  try { state.loadPointsJson(await f.text()); view.draw(); onEdited(); } catch (err) { showError(err.message); }
});
$('download-gif').addEventListener('click', () => {
  if (!result) return;
  // Frames at up to 384 px wide: the original, each drag timestep's preview (upscaled from the
  // latent resolution), then the result held for four frames.
  const w = Math.min(photo.width, 384);
  const h = Math.max(1, Math.round((photo.height * w) / photo.width));
  const scaled = (src) => {
    const c = new OffscreenCanvas(w, h);
    const g = c.getContext('2d');
    g.imageSmoothingQuality = 'high';
    g.drawImage(src, 0, 0, w, h);
    return g.getImageData(0, 0, w, h).data;
  };
  const frames = [scaled(photo.bitmap)];
  for (const p of result.previews) {
    const c = new OffscreenCanvas(p.width, p.height);
    c.getContext('2d').putImageData(new ImageData(rgbToRgba(p.rgb), p.width, p.height), 0, 0);
    frames.push(scaled(c));
  }
  const finalFrame = scaled($('after'));
  for (let i = 0; i < 4; i++) frames.push(finalFrame);
  download(new Blob([encodeGif(frames, w, h, 500)], { type: 'image/gif' }), `${baseName()}-drag.gif`);
});

// Offline: the service worker keeps the app shell (never the model, which IndexedDB holds).
if ('serviceWorker' in navigator && location.protocol !== 'file:') {
  navigator.serviceWorker.register('./sw.js').catch(() => {});
}

start();
