// Pure helpers of the weights cache (unit-tested with node --test): which files make a
// diffusers model, cache keys, hashing, and the default model source.

/** The files of a diffusers SD 1.5 folder: small text files and, per network, weights
 * candidates in order of preference (fp16 first). */
export function modelFileList() {
  return {
    text: [
      { rel: 'unet/config.json', required: true },
      { rel: 'vae/config.json', required: true },
      { rel: 'text_encoder/config.json', required: true },
      { rel: 'tokenizer/vocab.json', required: true },
      { rel: 'tokenizer/merges.txt', required: true },
      { rel: 'tokenizer/tokenizer_config.json', required: false },
      { rel: 'tokenizer/special_tokens_map.json', required: false },
      { rel: 'scheduler/scheduler_config.json', required: false },
    ],
    weights: [
      { part: 'unet', candidates: ['unet/diffusion_pytorch_model.fp16.safetensors', 'unet/diffusion_pytorch_model.safetensors'] },
      { part: 'vae', candidates: ['vae/diffusion_pytorch_model.fp16.safetensors', 'vae/diffusion_pytorch_model.safetensors'] },
      { part: 'text_encoder', candidates: ['text_encoder/model.fp16.safetensors', 'text_encoder/model.safetensors'] },
    ],
  };
}

/** The default source: SD 1.5's fp16 files with the sd-vae-ft-mse VAE, as GoodDrag uses. */
export const DEFAULT_SOURCE = {
  kind: 'url',
  id: 'sd15-fp16+vae-ft-mse',
  label: 'Stable Diffusion 1.5 (fp16) + sd-vae-ft-mse',
  base: 'https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/',
  vaeBase: 'https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/',
};

/** Cache key of one file of one model source. */
export function fileKey(sourceId, rel) {
  return `${sourceId}/${rel}`;
}

/** A source for a URL prefix (normalised to end with '/'). */
export function urlSource(base, label) {
  const normal = base.endsWith('/') ? base : `${base}/`;
  return { kind: 'url', id: normal, label: label ?? normal, base: normal };
}

/** Maps picked files (with webkitRelativePath or plain names) to diffusers-relative paths:
 * the part after the model folder, e.g. `sd15/unet/config.json` → `unet/config.json`. */
export function relativePaths(entries) {
  const parts = ['unet/', 'vae/', 'text_encoder/', 'tokenizer/', 'scheduler/'];
  const out = {};
  for (const { path, file } of entries) {
    const norm = path.replace(/\\/g, '/');
    for (const p of parts) {
      const i = norm.lastIndexOf(p);
      if (i >= 0 && (i === 0 || norm[i - 1] === '/')) {
        out[norm.slice(i)] = file;
        break;
      }
    }
  }
  return out;
}

/** Lowercase hex SHA-256 of an ArrayBuffer / view (WebCrypto, also in Node ≥ 19). */
export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
