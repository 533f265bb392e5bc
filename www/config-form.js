// DragConfig ↔ flat form fields (`lora.steps` for nested ones). Pure; unit-tested.

/** Flattens a config object into [{ key, value }] with dotted keys for nested objects. */
export function flattenConfig(config, prefix = '') {
  const out = [];
  for (const [k, v] of Object.entries(config)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) out.push(...flattenConfig(v, key));
    else out.push({ key, value: v });
  }
  return out;
}

/** Rebuilds the nested object; throws on a non-finite number, naming the field. */
export function unflattenConfig(entries) {
  const out = {};
  for (const { key, value } of entries) {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error(`Setting “${key}” must be a number.`);
    const parts = key.split('.');
    let obj = out;
    for (const p of parts.slice(0, -1)) obj = obj[p] ??= {};
    obj[parts.at(-1)] = value;
  }
  return out;
}

/** Every DragConfig field as a person reads it: phase group, label, unit or range, one-line hint
 * (the field names are the official code's; tests/js/editor.test.mjs checks every field of
 * src/drag/config.rs and src/lora/train.rs has an entry). */
export const SETTINGS = {
  use_lora: { group: 'LoRA', label: 'Fine-tune a LoRA first', hint: 'Adapts the model to this photo so the edit keeps its identity (GoodDrag §3.1).' },
  'lora.steps': { group: 'LoRA', label: 'Training steps', unit: 'steps', hint: 'More steps fit the photo more closely and take longer (default 70).' },
  'lora.batch_size': { group: 'LoRA', label: 'Crops per step', unit: 'crops', hint: 'Random crops of the photo trained on together in each step.' },
  'lora.rank': { group: 'LoRA', label: 'Adapter rank', unit: 'rank', hint: 'Capacity of the adapter (default 16).' },
  'lora.learning_rate': { group: 'LoRA', label: 'Learning rate', unit: 'AdamW', hint: 'Step size of the adapter training (default 0.0005).' },
  'lora.weight_decay': { group: 'LoRA', label: 'Weight decay', unit: 'AdamW', hint: 'Decoupled weight decay of the adapter training.' },
  'lora.resolution': { group: 'LoRA', label: 'Crop size', unit: 'px', hint: 'The photo is resized so its short side is this, then cropped square.' },
  'lora.seed': { group: 'LoRA', label: 'Random seed', unit: 'seed', hint: 'Same seed, same photo: the same adapter.' },
  n_inference_steps: { group: 'Inversion', label: 'Denoising steps', unit: 'steps', hint: 'DDIM steps of the whole schedule (default 50).' },
  inversion_strength: { group: 'Inversion', label: 'Inversion strength', unit: '0–1', hint: 'How far back into noise the photo goes: higher allows bigger changes, keeps less detail.' },
  drag_end_step: { group: 'Drag', label: 'Drag timesteps', unit: 'timesteps', hint: 'Denoising timesteps that drag (alternating drag and denoising, default 7).' },
  track_per_denoise: { group: 'Drag', label: 'Drags per timestep', unit: 'operations', hint: 'Drag operations (each ending in point tracking) per timestep.' },
  max_drag_per_track: { group: 'Drag', label: 'Supervision steps per drag', unit: 'steps', hint: 'Motion-supervision steps between two trackings.' },
  max_track_no_change: { group: 'Drag', label: 'Stop after idle trackings', unit: 'trackings', hint: 'Stop dragging when the handles have not moved for this many trackings.' },
  drag_loss_threshold: { group: 'Drag', label: 'Early-tracking loss', unit: '× (2r₁)²', hint: 'Also track as soon as the drag loss falls below this (0: only when every point is done).' },
  once_drag: { group: 'Drag', label: 'Track after every step', hint: 'Track the handles after each supervision step instead of after each drag.' },
  reach_distance: { group: 'Drag', label: 'Reached within', unit: 'feature px', hint: 'A handle this close to its target counts as arrived.' },
  latent_lr: { group: 'Drag', label: 'Latent learning rate', unit: 'Adam', hint: 'Step size of the optimisation of the noisy latent (default 0.02).' },
  r1: { group: 'Drag', label: 'Supervision radius r₁', unit: 'feature px', hint: 'Half-size of the patch moved toward the target in each step.' },
  r2: { group: 'Drag', label: 'Tracking radius r₂', unit: 'feature px', hint: 'Half-size of the window searched for the handle after a drag.' },
  beta: { group: 'Drag', label: 'Largest shift per step β', unit: 'feature px', hint: 'How far a patch may move in one supervision step.' },
  lambda: { group: 'Drag', label: 'Outside-mask weight λ', unit: 'weight', hint: 'How strongly the area outside the mask is kept unchanged.' },
  information_preserving: { group: 'Drag', label: 'Information-preserving supervision', hint: 'Compare with the original handle features, so details are not lost over many steps (GoodDrag §3.3).' },
  patch_weight: { group: 'Drag', label: 'Per-point loss normalisation', hint: 'How the per-point L1 is weighted (the official code: two-r).' },
  feature_up_block: { group: 'Drag', label: 'Feature block', unit: 'UNet up block', hint: 'Which decoder block of the UNet gives the features that are matched (default 2).' },
  feature_scale: { group: 'Drag', label: 'Feature resolution', unit: '× image', hint: 'Points and features live at this fraction of the working size (default 0.5).' },
  masactrl: { group: 'Denoising', label: 'Keep appearance (Latent-MasaCtrl)', hint: 'Finish denoising with attention to the original, preserving textures and identity.' },
  masactrl_start_layer: { group: 'Denoising', label: 'First mutual-attention layer', unit: 'transformer block', hint: 'Blocks from this one on attend to the original (default 10).' },
};

/** The order groups appear in the advanced panel. */
export const SETTING_GROUPS = ['LoRA', 'Inversion', 'Drag', 'Denoising', 'Other'];

/** The description of `key`, or a plain one for a field the table does not know. */
export function describeSetting(key) {
  return SETTINGS[key] ?? { group: 'Other', label: key, hint: '' };
}
