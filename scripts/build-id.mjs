// Reads the build id from the engine's `gooddrag-build-id` custom section (build.rs) and writes
// it as pkg/build-id.js, which the service worker (importScripts) and the engine worker (import)
// load: `self.GOODDRAG_BUILD_ID = "…"`. Usage: node scripts/build-id.mjs [--check] ENGINE.wasm OUT.js
// (--check: verify instead of write).
import fs from 'node:fs';

/** The content of the custom section `name` of a wasm module, or null. */
export function customSection(bytes, name) {
  let i = 8; // magic + version
  const leb = () => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[i++];
      v += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < bytes.length) {
    const id = bytes[i++];
    const size = leb();
    const end = i + size;
    if (id === 0) {
      const len = leb();
      const section = new TextDecoder().decode(bytes.subarray(i, i + len));
      if (section === name) return bytes.subarray(i + len, end);
    }
    i = end;
  }
  return null;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const check = process.argv[2] === '--check';
  const [wasm, out] = process.argv.slice(check ? 3 : 2);
  const id = customSection(fs.readFileSync(wasm), 'gooddrag-build-id');
  if (!id || !/^[0-9a-f]{16}$/.test(new TextDecoder().decode(id))) {
    console.error(`${wasm} has no gooddrag-build-id section`);
    process.exit(1);
  }
  const text = `self.GOODDRAG_BUILD_ID = ${JSON.stringify(new TextDecoder().decode(id))};\n`;
  if (check) {
    // --check: the module still carries the id OUT.js names (wasm-opt kept the section).
    if (fs.readFileSync(out, 'utf8') !== text) {
      console.error(`${wasm} and ${out} disagree on the build id`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(out, text);
  }
  console.log(`build id: ${new TextDecoder().decode(id)}`);
}
