// The independent Zarr v3 side of cellflow's interop tests, with zarrita.
//   node zarrita_tool.mjs read PATH OUT.raw   reads the whole array at PATH (an array,
//       or an OME-Zarr group: its first multiscale's first dataset, found by its NGFF 0.5
//       "ome" attributes or 0.4 "multiscales") and writes its
//       elements to OUT.raw (C order, little-endian); prints {"shape", "dtype", "attributes"}.
//   node zarrita_tool.mjs write DIR           writes test arrays with zarrita under DIR
//       (one per codec chain zarrita can encode), each with NAME.raw holding the values
//       it was given; prints a JSON list of {name, path, raw, dtype, shape, chunks}.
import * as fs from "node:fs";
import * as path from "node:path";
import FileSystemStore from "@zarrita/storage/fs";
import * as zarr from "zarrita";

function le_bytes(typed) {
  return Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);  // Node on x86/ARM: LE
}

// The elements of a zarrita chunk {data, shape, stride} in C order (zarrita
// returns a transposed array's elements in their stored order, with strides).
function c_order({ data, shape, stride }) {
  const n = shape.reduce((a, b) => a * b, 1);
  const c_strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  if (c_strides.every((s, d) => s === stride[d] || shape[d] === 1)) return data;
  const out = new data.constructor(n);
  const index = new Array(shape.length).fill(0);
  for (let i = 0; i < n; ++i) {
    out[i] = data[index.reduce((acc, x, d) => acc + x * stride[d], 0)];
    for (let d = shape.length - 1; d >= 0 && ++index[d] === shape[d]; --d) index[d] = 0;
  }
  return out;
}

async function read(where, out) {
  const store = new FileSystemStore(where);
  let node = await zarr.open(zarr.root(store));
  let attributes = node.attrs;
  if (node instanceof zarr.Group) {
    const ome = attributes.ome ?? attributes;
    const first = ome.multiscales[0].datasets[0].path;
    node = await zarr.open(zarr.root(store).resolve(first), { kind: "array" });
  }
  const chunk = await zarr.get(node);
  fs.writeFileSync(out, le_bytes(c_order(chunk)));
  console.log(JSON.stringify({ shape: chunk.shape, dtype: node.dtype, attributes }));
}

// Deterministic values that use every byte of the type (sign, fractions, large values).
function values(ctor, n) {
  const out = new ctor(n);
  for (let i = 0; i < n; ++i) {
    const v = (i * 2654435761) % 4294967291;
    if (ctor === Float32Array || ctor === Float64Array) out[i] = (v % 100003) / 7.25 - 5000.5;
    else if (ctor === BigInt64Array || ctor === BigUint64Array)
      out[i] = BigInt(v) * 1000003n * (ctor === BigInt64Array && i % 3 ? -1n : 1n);
    else out[i] = v;  // typed arrays wrap modulo their range
  }
  return out;
}

async function write(dir) {
  const shape = [13, 17, 10];
  const chunks = [5, 8, 4];
  const n = shape.reduce((a, b) => a * b, 1);
  const le = { name: "bytes", configuration: { endian: "little" } };
  const be = { name: "bytes", configuration: { endian: "big" } };
  const blosc = (cname, shuffle) => ({
    name: "blosc",
    configuration: { cname, clevel: 5, shuffle, typesize: 4, blocksize: 0 },
  });
  const cases = [
    ["u8_bytes", "uint8", Uint8Array, [le]],
    ["u16_le", "uint16", Uint16Array, [le]],
    ["u16_be", "uint16", Uint16Array, [be]],
    ["i32_be", "int32", Int32Array, [be]],
    ["i64_le", "int64", BigInt64Array, [le]],
    ["u64_be", "uint64", BigUint64Array, [be]],
    ["f32_le", "float32", Float32Array, [le]],
    ["f64_be", "float64", Float64Array, [be]],
    ["f32_transpose", "float32", Float32Array,
     [{ name: "transpose", configuration: { order: [2, 0, 1] } }, le]],
    ["u16_blosc_lz4", "uint16", Uint16Array, [le, blosc("lz4", "shuffle")]],
    ["f32_blosc_zstd", "float32", Float32Array, [le, blosc("zstd", "bitshuffle")]],
    ["i16_zstd", "int16", Int16Array, [le, { name: "zstd", configuration: { level: 3, checksum: false } }]],
    ["u32_be_zstd", "uint32", Uint32Array, [be, { name: "zstd", configuration: { level: 1, checksum: false } }]],
  ];
  const manifest = [];
  for (const [name, dtype, ctor, codecs] of cases) {
    const where = path.join(dir, name + ".zarr");
    fs.mkdirSync(where, { recursive: true });
    const arr = await zarr.create(zarr.root(new FileSystemStore(where)), {
      shape, dtype, chunkShape: chunks, codecs, fillValue: 0,
    });
    const data = values(ctor, n);
    await zarr.set(arr, null, { data, shape, stride: [shape[1] * shape[2], shape[2], 1] });
    const raw = path.join(dir, name + ".raw");
    fs.writeFileSync(raw, le_bytes(data));
    manifest.push({ name, path: where, raw, dtype, shape, chunks });
  }
  console.log(JSON.stringify(manifest));
}

const [cmd, a, b] = process.argv.slice(2);
if (cmd === "read") await read(a, b);
else if (cmd === "write") await write(a);
else {
  console.error("usage: zarrita_tool.mjs read PATH OUT.raw | write DIR");
  process.exit(2);
}
