/**
 * Host-side operations on batched KV caches: keeping a subset of rows when requests finish.
 * @module
 */
import ort from 'onnxruntime-node';
import type { KvCache } from './engine.js';

function selectTensorRows(tensor: ort.Tensor, rows: readonly number[]): ort.Tensor {
  const [batch, heads, length, headDim] = tensor.dims;
  const perRow = heads * length * headDim;
  const source = tensor.data as Float32Array;
  const out = new Float32Array(rows.length * perRow);
  rows.forEach((row, i) => {
    if (row < 0 || row >= batch) throw new RangeError(`cache row ${row} is outside [0, ${batch})`);
    out.set(source.subarray(row * perRow, (row + 1) * perRow), i * perRow);
  });
  return new ort.Tensor('float32', out, [rows.length, heads, length, headDim]);
}

/** Returns a cache with only `rows` of `cache`, in that order. */
export function selectCacheRows(cache: KvCache, rows: readonly number[]): KvCache {
  return {
    keys: cache.keys.map((t) => selectTensorRows(t, rows)),
    values: cache.values.map((t) => selectTensorRows(t, rows)),
    batchSize: rows.length,
    length: cache.length,
  };
}
