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
