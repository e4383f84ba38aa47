/**
 * The running batch of continuous batching: the KV cache of all running rows plus each row's
 * attention mask and next position. Rows are left-padded, so a row's mask is zeros (padding)
 * followed by ones (its tokens), and columns that are padding for every row form a prefix.
 * New rows are prefilled on their own and then merged in; finished rows are removed.
 * @module
 */
import ort from 'onnxruntime-node';
import type { ForwardInput, KvCache } from './engine.js';
import { selectCacheRows } from './kv-cache.js';

/** One running row of the batch. */
export interface BatchRow {
  readonly jobId: string;
  /** Mask over the cache's columns: 0 for padding, 1 for the row's tokens. */
  mask: number[];
  /** Position of the row's next token, which is also its number of cached tokens. */
  nextPosition: number;
}

/** A prefill forward call for new rows, with where each row's logits land in the output. */
export interface PrefillPlan {
  readonly input: ForwardInput;
  /**
   * Per row: the index of its first returned logits row and how many it has. A row with prompt
   * log-probabilities gets one logits row per prompt token, otherwise only the last one.
   */
  readonly logitsRows: readonly { readonly first: number; readonly count: number }[];
  /** The prompts' masks, which become the rows' masks after the call. */
  readonly masks: readonly number[][];
}

/** A prompt to prefill. */
export interface PrefillRow {
  readonly promptIds: readonly number[];
  readonly slotId: number;
  /** Return logits for every prompt position (for prompt log-probabilities), not only the last. */
  readonly allLogits: boolean;
}

export class BatchStateError extends Error {
  override readonly name = 'BatchStateError';
}

/**
 * Plans the prefill of `rows` in one forward call without a cache: prompts are left-padded to
 * the longest, padding uses token 0 at position 0 and is masked out.
 */
export function planPrefill(rows: readonly PrefillRow[]): PrefillPlan {
  if (rows.length === 0) throw new BatchStateError('prefill needs at least one row');
  const width = Math.max(...rows.map((row) => row.promptIds.length));
  const inputIds: number[][] = [];
  const positionIds: number[][] = [];
  const masks: number[][] = [];
  const logitsIndices: number[] = [];
  const logitsRows: { first: number; count: number }[] = [];

  rows.forEach((row, r) => {
    const length = row.promptIds.length;
    if (length === 0) throw new BatchStateError(`prefill row ${r} has an empty prompt; pass at least one token`);
    const padding = width - length;
    inputIds.push([...new Array<number>(padding).fill(0), ...row.promptIds]);
    positionIds.push(Array.from({ length: width }, (_, c) => Math.max(0, c - padding)));
    masks.push([...new Array<number>(padding).fill(0), ...new Array<number>(length).fill(1)]);

    const firstColumn = row.allLogits ? padding : width - 1;
    logitsRows.push({ first: logitsIndices.length, count: width - firstColumn });
    for (let c = firstColumn; c < width; c++) logitsIndices.push(r * width + c);
  });

  return {
    input: { inputIds, positionIds, attentionMask: masks, logitsIndices, slotIds: rows.map((row) => row.slotId), past: null },
    logitsRows,
    masks,
  };
}

/** Returns `tensor` ([batch, heads, length, headDim]) with `numColumns` zero columns added on the left of the length axis. */
function padTensorLeft(tensor: ort.Tensor, numColumns: number): ort.Tensor {
  if (numColumns === 0) return tensor;
  const [batch, heads, length, headDim] = tensor.dims;
  const source = tensor.data as Float32Array;
  const newLength = length + numColumns;
  const out = new Float32Array(batch * heads * newLength * headDim);
  for (let block = 0; block < batch * heads; block++) {
    const from = block * length * headDim;
    out.set(source.subarray(from, from + length * headDim), (block * newLength + numColumns) * headDim);
  }
  return new ort.Tensor('float32', out, [batch, heads, newLength, headDim]);
}

/** Returns `tensor` without its first `numColumns` columns of the length axis. */
function dropTensorColumns(tensor: ort.Tensor, numColumns: number): ort.Tensor {
  if (numColumns === 0) return tensor;
  const [batch, heads, length, headDim] = tensor.dims;
  const source = tensor.data as Float32Array;
  const newLength = length - numColumns;
  const out = new Float32Array(batch * heads * newLength * headDim);
  for (let block = 0; block < batch * heads; block++) {
    const from = (block * length + numColumns) * headDim;
    out.set(source.subarray(from, from + newLength * headDim), block * newLength * headDim);
  }
  return new ort.Tensor('float32', out, [batch, heads, newLength, headDim]);
}

/** Returns the rows of `a` followed by the rows of `b`; both must have the same length and head sizes. */
function concatTensorRows(a: ort.Tensor, b: ort.Tensor): ort.Tensor {
  const [batchA, heads, length, headDim] = a.dims;
  const [batchB, headsB, lengthB, headDimB] = b.dims;
  if (heads !== headsB || length !== lengthB || headDim !== headDimB) {
    throw new BatchStateError(`cannot stack cache tensors [${a.dims.join(', ')}] and [${b.dims.join(', ')}]: all but the batch axis must match`);
  }
  const out = new Float32Array((batchA + batchB) * heads * length * headDim);
  out.set(a.data as Float32Array, 0);
  out.set(b.data as Float32Array, batchA * heads * length * headDim);
  return new ort.Tensor('float32', out, [batchA + batchB, heads, length, headDim]);
}

/** Returns `cache` with `numColumns` padding columns added on the left. */
export function padCacheLeft(cache: KvCache, numColumns: number): KvCache {
  return {
    keys: cache.keys.map((t) => padTensorLeft(t, numColumns)),
    values: cache.values.map((t) => padTensorLeft(t, numColumns)),
    batchSize: cache.batchSize,
    length: cache.length + numColumns,
  };
}

/** Returns `cache` without its first `numColumns` columns. */
export function dropCacheColumns(cache: KvCache, numColumns: number): KvCache {
  if (numColumns < 0 || numColumns > cache.length) throw new BatchStateError(`cannot drop ${numColumns} of ${cache.length} cache columns`);
  return {
    keys: cache.keys.map((t) => dropTensorColumns(t, numColumns)),
    values: cache.values.map((t) => dropTensorColumns(t, numColumns)),
    batchSize: cache.batchSize,
    length: cache.length - numColumns,
  };
}

/** Number of leading zeros of a mask. */
function leadingPadding(mask: readonly number[]): number {
  const first = mask.indexOf(1);
  return first < 0 ? mask.length : first;
}

/** The running rows and their shared KV cache. Empty batches have no cache. */
export class BatchState {
  private rowList: BatchRow[] = [];
  private kvCache: KvCache | null = null;

  get rows(): readonly BatchRow[] {
    return this.rowList;
  }

  get size(): number {
    return this.rowList.length;
  }

  /** Cache columns per row (0 when empty). */
  get length(): number {
    return this.kvCache?.length ?? 0;
  }

  get cache(): KvCache | null {
    return this.kvCache;
  }

  /**
   * Adds rows whose cache comes from their own forward call (a prefill). Both parts are
   * left-padded to the longer length, and the new rows go after the existing ones.
   */
  merge(rows: readonly BatchRow[], cache: KvCache): void {
    if (rows.length !== cache.batchSize) throw new BatchStateError(`merge: ${rows.length} rows but the cache has ${cache.batchSize}`);
    for (const row of rows) {
      if (row.mask.length !== cache.length) {
        throw new BatchStateError(`merge: row ${row.jobId} has a mask of ${row.mask.length} columns but the cache has ${cache.length}`);
      }
    }
    const added = rows.map((row) => ({ ...row, mask: [...row.mask] }));
    if (this.kvCache === null) {
      this.rowList = added;
      this.kvCache = cache;
      this.trimPadding();
      return;
    }

    const length = Math.max(this.kvCache.length, cache.length);
    const existing = padCacheLeft(this.kvCache, length - this.kvCache.length);
    const incoming = padCacheLeft(cache, length - cache.length);
    for (const row of this.rowList) row.mask = [...new Array<number>(length - row.mask.length).fill(0), ...row.mask];
    for (const row of added) row.mask = [...new Array<number>(length - row.mask.length).fill(0), ...row.mask];
    this.kvCache = {
      keys: existing.keys.map((t, layer) => concatTensorRows(t, incoming.keys[layer])),
      values: existing.values.map((t, layer) => concatTensorRows(t, incoming.values[layer])),
      batchSize: existing.batchSize + incoming.batchSize,
      length,
    };
    this.rowList = [...this.rowList, ...added];
    this.trimPadding();
  }

  /**
   * Returns the forward input of one decode step: each row feeds `tokenIds[row]` at its next
   * position and attends to its cached tokens plus the new one.
   */
  decodeInput(tokenIds: readonly number[], slotIds: readonly number[]): ForwardInput {
    if (this.kvCache === null) throw new BatchStateError('decode step on an empty batch');
    if (tokenIds.length !== this.rowList.length || slotIds.length !== this.rowList.length) {
      throw new BatchStateError(`decode step: ${tokenIds.length} tokens and ${slotIds.length} slots for ${this.rowList.length} rows`);
    }
    return {
      inputIds: tokenIds.map((id) => [id]),
      positionIds: this.rowList.map((row) => [row.nextPosition]),
      attentionMask: this.rowList.map((row) => [...row.mask, 1]),
      logitsIndices: this.rowList.map((_, r) => r),
      slotIds,
      past: this.kvCache,
    };
  }

  /** Takes the cache of a decode step made from {@link decodeInput}: every row gained one token. */
  appendStep(present: KvCache): void {
    if (present.batchSize !== this.rowList.length || present.length !== this.length + 1) {
      throw new BatchStateError(
        `decode result has ${present.batchSize} rows of ${present.length} columns, expected ${this.rowList.length} rows of ${this.length + 1}`,
      );
    }
    this.kvCache = present;
    for (const row of this.rowList) {
      row.mask.push(1);
      row.nextPosition += 1;
    }
  }

  /** Keeps only the rows whose job ids are in `jobIds`, in their current order, then trims padding. */
  keepRows(jobIds: ReadonlySet<string>): void {
    const kept: number[] = [];
    this.rowList.forEach((row, r) => {
      if (jobIds.has(row.jobId)) kept.push(r);
    });
    if (kept.length === this.rowList.length) return;
    if (kept.length === 0 || this.kvCache === null) {
      this.rowList = [];
      this.kvCache = null;
      return;
    }
    this.kvCache = selectCacheRows(this.kvCache, kept);
    this.rowList = kept.map((r) => this.rowList[r]);
    this.trimPadding();
  }

  /** Drops leading columns that are padding in every row, so removed long rows stop costing attention. */
  private trimPadding(): void {
    if (this.kvCache === null || this.rowList.length === 0) return;
    const numColumns = Math.min(...this.rowList.map((row) => leadingPadding(row.mask)));
    if (numColumns === 0) return;
    this.kvCache = dropCacheColumns(this.kvCache, numColumns);
    for (const row of this.rowList) row.mask = row.mask.slice(numColumns);
  }
}
