// Where the bytes of a wasm module go: section sizes, code bytes per crate and the largest
// functions, read from the module's `name` section. Point it at the cargo output (before
// wasm-opt strips the names). wasm-bindgen removes what is unreachable and demangles the
// names, so run it first:
//
//   wasm-bindgen --target web --out-dir /tmp/hf target/wasm32-unknown-unknown/wasm-release/holdfast.wasm
//   node bench/wasm-size.mjs /tmp/hf/holdfast_bg.wasm [TOP]
//
// Sizes are before wasm-opt (-Oz shrinks code by roughly a third), so read them as shares.

import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/wasm-size.mjs <module.wasm> [TOP]');
  process.exit(2);
}
const buf = readFileSync(file);
if (buf.readUInt32LE(0) !== 0x6d736100) throw new Error(`${file} is not a wasm module`);
let p = 8;
const leb = () => {
  let r = 0;
  let s = 0;
  let b;
  do {
    b = buf[p++];
    r += (b & 0x7f) * 2 ** s;
    s += 7;
  } while (b & 0x80);
  return r;
};
const str = () => {
  const l = leb();
  const v = buf.subarray(p, p + l).toString();
  p += l;
  return v;
};
const limits = () => {
  const f = buf[p++];
  leb();
  if (f & 1) leb();
};

const SECTION = ['custom', 'type', 'import', 'function', 'table', 'memory', 'global', 'export', 'start', 'element', 'code', 'data', 'data count', 'tag'];
const sections = new Map();
const bodies = [];
const names = new Map();
let importedFns = 0;
while (p < buf.length) {
  const id = buf[p++];
  const size = leb();
  const end = p + size;
  let label = SECTION[id] ?? `section ${id}`;
  if (id === 0) {
    const name = str();
    label = `custom "${name}"`;
    if (name === 'name') {
      while (p < end) {
        const sub = buf[p++];
        const subEnd = leb() + p;
        if (sub === 1) {
          for (let n = leb(); n > 0; n--) {
            const idx = leb();
            names.set(idx, str());
          }
        }
        p = subEnd;
      }
    }
  } else if (id === 2) {
    for (let n = leb(); n > 0; n--) {
      str();
      str();
      const kind = buf[p++];
      if (kind === 0) {
        leb();
        importedFns++;
      } else if (kind === 1) {
        p++;
        limits();
      } else if (kind === 2) limits();
      else if (kind === 3) p += 2;
      else if (kind === 4) p += 1 + 0 * leb();
    }
  } else if (id === 10) {
    for (let n = leb(); n > 0; n--) {
      const s = leb();
      bodies.push(s);
      p += s;
    }
  }
  sections.set(label, (sections.get(label) ?? 0) + size);
  p = end;
}

const fns = bodies.map((s, i) => [names.get(importedFns + i) ?? `func ${importedFns + i}`, s]).sort((a, b) => b[1] - a[1]);
const crateOf = (n) => {
  const m = n.match(/^<?(?:&(?:mut )?)?([a-z_][a-z0-9_]*)(?:\[[0-9a-f]+\])?::/);
  if (!m) return n.startsWith('<') ? 'trait impls' : 'unnamed';
  return m[1] === 'holdfast' ? `holdfast::${n.split('::')[1] ?? ''}` : m[1];
};
const byCrate = new Map();
for (const [n, s] of fns) byCrate.set(crateOf(n), (byCrate.get(crateOf(n)) ?? 0) + s);
const code = bodies.reduce((a, b) => a + b, 0);

console.log(`${file}: ${buf.length} bytes`);
console.log('\nsections:');
for (const [k, v] of [...sections].sort((a, b) => b[1] - a[1])) console.log(`  ${String(v).padStart(8)}  ${k}`);
console.log(`\ncode: ${code} bytes in ${bodies.length} functions; by crate (module for holdfast):`);
for (const [k, v] of [...byCrate].sort((a, b) => b[1] - a[1])) console.log(`  ${String(v).padStart(8)}  ${((100 * v) / code).toFixed(1).padStart(5)} %  ${k}`);
console.log(`\nlargest functions:`);
for (const [n, s] of fns.slice(0, Number(topArg ?? 25))) console.log(`  ${String(s).padStart(8)}  ${n.replace(/\[[0-9a-f]{16}\]/g, '').replace(/::h[0-9a-f]{16}$/, '').slice(0, 140)}`);
