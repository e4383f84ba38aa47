/**
 * Next-token sampling from one row of logits: greedy, or temperature, top-k and top-p (nucleus)
 * filtering followed by a draw from a seeded generator. Filters apply in the order Hugging Face
 * transformers and vLLM use: divide by the temperature, keep the k most likely tokens,
 * renormalise, then keep the smallest most-likely-first prefix whose mass reaches top_p.
 * All arithmetic is float64.
 * @module
 */

import { createRng, randomSeed } from './rng.js';
import type { Rng } from './rng.js';

/** Sampling settings of one request. */
export interface SamplingParams {
  /** Divisor of the logits, or 0 for greedy decoding (argmax). Finite and >= 0. */
  temperature: number;
  /** Number of most likely tokens kept, or 0 to keep all. Integer >= 0. */
  topK: number;
  /** Probability mass of the nucleus kept after top-k, in (0, 1]. 1 keeps all tokens. */
  topP: number;
  /** Seed of the generator, an integer in [0, 2^53 - 1], or null for a random seed. */
  seed: number | null;
}

/** One drawn token. */
export interface SampledToken {
  tokenId: number;
  /** Natural log-probability of tokenId under the unmodified model distribution (log-softmax of the raw logits). */
  logprob: number;
}

/** A token id with its natural log-probability under the unmodified model distribution. */
export interface TokenLogprob {
  tokenId: number;
  logprob: number;
}

/** Error for a sampling setting outside its allowed range; the message names the field, the value and the range. */
export class SamplingParamsError extends Error {
  override readonly name = 'SamplingParamsError';

  constructor(
    readonly field: string,
    readonly value: unknown,
    allowed: string,
  ) {
    super(`invalid sampling parameter ${field}=${String(value)}: expected ${allowed}`);
  }
}

/** Error for a logits row that has no valid distribution: empty, NaN, +Infinity, or every entry -Infinity. */
export class LogitsError extends Error {
  override readonly name = 'LogitsError';
}

/**
 * Checks every field of `p`. Throws {@link SamplingParamsError} for the first invalid field.
 */
export function validateSamplingParams(p: SamplingParams): void {
  if (typeof p.temperature !== 'number' || !Number.isFinite(p.temperature) || p.temperature < 0) {
    throw new SamplingParamsError('temperature', p.temperature, 'a finite number >= 0 (0 means greedy decoding)');
  }
  if (!Number.isSafeInteger(p.topK) || p.topK < 0) {
    throw new SamplingParamsError('topK', p.topK, 'an integer >= 0 (0 disables top-k)');
  }
  if (typeof p.topP !== 'number' || !(p.topP > 0 && p.topP <= 1)) {
    throw new SamplingParamsError('topP', p.topP, 'a number in (0, 1] (1 disables top-p)');
  }
  if (p.seed !== null && (!Number.isSafeInteger(p.seed) || p.seed < 0)) {
    throw new SamplingParamsError('seed', p.seed, `null or an integer in [0, ${Number.MAX_SAFE_INTEGER}]`);
  }
}

// #region logits statistics

interface LogitsMaximum {
  maxLogit: number;
  /** Lowest token id whose logit equals maxLogit. */
  argmax: number;
}

/** Finds the maximum logit and its lowest id. Throws {@link LogitsError} for a row with no valid distribution. */
function findMaximum(logits: Float32Array): LogitsMaximum {
  if (logits.length === 0) {
    throw new LogitsError('invalid logits: the row is empty, but the model must return one logit per vocabulary entry');
  }
  let maxLogit = Number.NEGATIVE_INFINITY;
  let argmax = -1;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i];
    if (value > maxLogit) {
      maxLogit = value;
      argmax = i;
    } else if (value !== value) {
      throw new LogitsError(`invalid logits: token ${i} has logit NaN. Check the model output for numerical errors.`);
    }
  }
  if (maxLogit === Number.POSITIVE_INFINITY) {
    throw new LogitsError(`invalid logits: token ${argmax} has logit +Infinity. Check the model output for overflow.`);
  }
  if (argmax < 0) {
    throw new LogitsError(`invalid logits: all ${logits.length} logits are -Infinity, so no token can be sampled`);
  }
  return { maxLogit, argmax };
}

/** Returns log(sum(exp(logits))) given the maximum logit, without overflow. */
function logSumExp(logits: Float32Array, maxLogit: number): number {
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - maxLogit);
  return maxLogit + Math.log(sum);
}

/**
 * Computes the natural log-softmax of `logits` in float64, subtracting the maximum first so no
 * exponential overflows. Tokens with logit -Infinity get -Infinity.
 * Throws {@link LogitsError} for an empty row, NaN, +Infinity, or a row of only -Infinity.
 */
export function logSoftmax(logits: Float32Array): Float64Array {
  const { maxLogit } = findMaximum(logits);
  const logNormaliser = logSumExp(logits, maxLogit);
  const result = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) result[i] = logits[i] - logNormaliser;
  return result;
}

// #endregion

// #region top-k selection

/** Returns whether token a ranks before token b: higher value first, lower id first on ties. */
function ranksBefore(values: Float32Array, a: number, b: number): boolean {
  const va = values[a];
  const vb = values[b];
  return va > vb || (va === vb && a < b);
}

/** Restores the heap property downwards from `position` in a heap whose root is the lowest-ranked token. */
function siftDown(heap: Int32Array, size: number, position: number, values: Float32Array): void {
  let parent = position;
  for (;;) {
    const left = 2 * parent + 1;
    if (left >= size) return;
    const right = left + 1;
    let lower = left;
    if (right < size && ranksBefore(values, heap[left], heap[right])) lower = right;
    if (!ranksBefore(values, heap[parent], heap[lower])) return;
    const swap = heap[parent];
    heap[parent] = heap[lower];
    heap[lower] = swap;
    parent = lower;
  }
}

function siftUp(heap: Int32Array, position: number, values: Float32Array): void {
  let child = position;
  while (child > 0) {
    const parent = (child - 1) >> 1;
    if (!ranksBefore(values, heap[parent], heap[child])) return;
    const swap = heap[parent];
    heap[parent] = heap[child];
    heap[child] = swap;
    child = parent;
  }
}

/** Sorts ids in place by rank with a comparator, which suits the few ids that the heap returns. */
function sortByRank(ids: Int32Array, values: Float32Array): Int32Array {
  return ids.sort((a, b) => {
    const difference = values[b] - values[a];
    return difference !== 0 ? difference : a - b;
  });
}

/** Returns the ids of all entries above -Infinity sorted by rank with a comparator, which is faster than the radix sort for short rows. */
function sortFiniteByRank(values: Float32Array): Int32Array {
  const ids = new Int32Array(values.length);
  let numFinite = 0;
  for (let i = 0; i < values.length; i++) {
    if (values[i] > Number.NEGATIVE_INFINITY) ids[numFinite++] = i;
  }
  return sortByRank(ids.subarray(0, numFinite), values).slice();
}

/**
 * Row length from which the radix sort is used. In one micro-benchmark (Node.js 20.20, AMD EPYC,
 * random float32 rows) the two sorts took about equally long at 256 entries and the radix sort
 * was about 4x faster at 3000.
 */
const MIN_RADIX_SORT_LENGTH = 512;
const RADIX_BITS = 11;
const RADIX_BUCKETS = 1 << RADIX_BITS;

/**
 * Returns the ids of all entries above -Infinity sorted by rank, with a stable least-significant
 * digit radix sort (3 passes of 11 bits) on a 32-bit key that orders float32 values descending.
 * Ids enter in increasing order and the sort is stable, so ties stay lowest id first. For a
 * vocabulary of 150k this is several times faster than `sort` with a comparator.
 */
function radixSortByRank(values: Float32Array): Int32Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let numFinite = 0;
  for (let i = 0; i < values.length; i++) {
    if (values[i] > Number.NEGATIVE_INFINITY) numFinite++;
  }

  let ids = new Int32Array(numFinite);
  let keys = new Uint32Array(numFinite);
  let j = 0;
  for (let i = 0; i < values.length; i++) {
    if (!(values[i] > Number.NEGATIVE_INFINITY)) continue;
    // -0 counts as +0 so that equal values tie.
    const valueBits = bits[i] === 0x80000000 ? 0 : bits[i];
    // Negative floats order by their magnitude bits, so larger values (smaller magnitudes)
    // keep smaller keys as they are; non-negative floats get inverted bits below 2^31.
    ids[j] = i;
    keys[j] = valueBits & 0x80000000 ? valueBits : ~valueBits & 0x7fffffff;
    j++;
  }

  let nextIds = new Int32Array(numFinite);
  let nextKeys = new Uint32Array(numFinite);
  const offsets = new Int32Array(RADIX_BUCKETS);
  for (let shift = 0; shift < 32; shift += RADIX_BITS) {
    offsets.fill(0);
    for (let k = 0; k < numFinite; k++) offsets[(keys[k] >>> shift) & (RADIX_BUCKETS - 1)]++;
    let start = 0;
    for (let bucket = 0; bucket < RADIX_BUCKETS; bucket++) {
      const count = offsets[bucket];
      offsets[bucket] = start;
      start += count;
    }
    for (let k = 0; k < numFinite; k++) {
      const destination = offsets[(keys[k] >>> shift) & (RADIX_BUCKETS - 1)]++;
      nextIds[destination] = ids[k];
      nextKeys[destination] = keys[k];
    }
    [ids, nextIds] = [nextIds, ids];
    [keys, nextKeys] = [nextKeys, keys];
  }
  return ids;
}

/**
 * Returns the ids of the `k` highest values, highest first and lowest id first on ties.
 * Entries equal to -Infinity are never returned, so the result may be shorter than `k`.
 * `values` must not contain NaN. Costs O(n log k) with a bounded heap while k is below n/8,
 * and a full sort above that (O(n) radix sort from 512 entries).
 */
export function topKIndices(values: Float32Array, k: number): Int32Array {
  const n = values.length;
  if (k <= 0) return new Int32Array(0);
  if (8 * k >= n) {
    const sorted = n < MIN_RADIX_SORT_LENGTH ? sortFiniteByRank(values) : radixSortByRank(values);
    return sorted.length > k ? sorted.slice(0, k) : sorted;
  }

  // Min-heap of the best k seen so far; the root is the lowest-ranked of them. Ids arrive in
  // increasing order, so a later id with a value equal to the root's never ranks before it.
  const heap = new Int32Array(k);
  let size = 0;
  for (let i = 0; i < n; i++) {
    const value = values[i];
    if (!(value > Number.NEGATIVE_INFINITY)) continue;
    if (size < k) {
      heap[size] = i;
      siftUp(heap, size, values);
      size++;
    } else if (value > values[heap[0]]) {
      heap[0] = i;
      siftDown(heap, size, 0, values);
    }
  }
  return sortByRank(heap.subarray(0, size), values).slice();
}

/**
 * Returns the `n` most likely tokens with their log-probabilities under the unmodified model
 * distribution, most likely first (lowest id first on ties). Tokens with probability zero
 * (logit -Infinity) are left out, so fewer than `n` entries may be returned.
 * Throws {@link SamplingParamsError} for a negative or fractional `n` and {@link LogitsError} for invalid logits.
 */
export function topLogprobs(logits: Float32Array, n: number): TokenLogprob[] {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new SamplingParamsError('n', n, 'an integer >= 0 (the number of most likely tokens to return)');
  }
  const { maxLogit } = findMaximum(logits);
  const logNormaliser = logSumExp(logits, maxLogit);
  const ids = topKIndices(logits, Math.min(n, logits.length));
  return Array.from(ids, (tokenId) => ({ tokenId, logprob: logits[tokenId] - logNormaliser }));
}

// #endregion

// #region sampler

/** First number of candidates tried when searching the nucleus over the whole vocabulary. */
const INITIAL_NUCLEUS_CANDIDATES = 256;

/**
 * Relative slack in the top-p comparison, so a nucleus whose exact mass equals top_p is not
 * widened by rounding error in the float64 sum (e.g. probabilities 0.5 + 0.3 against top_p 0.8).
 */
const TOP_P_RELATIVE_TOLERANCE = 1e-9;

/**
 * Draws tokens from logits rows with fixed sampling settings. One instance serves one request:
 * its generator advances with every draw, so equal seeds and equal logits rows give equal tokens.
 */
export class Sampler {
  readonly params: Readonly<SamplingParams>;
  /** Seed actually used: `params.seed`, or the random seed picked when that is null. */
  readonly seed: number;
  private readonly rng: Rng;
  /** Scratch buffer of unnormalised probabilities, reused across calls. */
  private weights = new Float64Array(0);

  /** Throws {@link SamplingParamsError} for invalid settings. */
  constructor(params: SamplingParams) {
    validateSamplingParams(params);
    this.params = { ...params };
    this.seed = params.seed ?? randomSeed();
    this.rng = createRng(this.seed);
  }

  /**
   * Picks the next token from one row of logits (length = vocabulary size).
   * Throws {@link LogitsError} for an empty row, NaN, +Infinity, or a row of only -Infinity.
   */
  sample(logits: Float32Array): SampledToken {
    const { maxLogit, argmax } = findMaximum(logits);
    const logNormaliser = logSumExp(logits, maxLogit);
    const { temperature, topK, topP } = this.params;

    // A subnormal temperature overflows 1 / temperature to Infinity, and 0 * Infinity is NaN, so
    // it is treated as greedy, its limit.
    const inverseTemperature = 1 / temperature;
    if (!Number.isFinite(inverseTemperature)) {
      return { tokenId: argmax, logprob: logits[argmax] - logNormaliser };
    }

    const vocabSize = logits.length;
    let tokenId: number;
    if (topK > 0 && topK < vocabSize) {
      const candidates = topKIndices(logits, topK);
      const numKept = topP < 1 ? this.countNucleus(logits, candidates, maxLogit, inverseTemperature) : candidates.length;
      tokenId = this.drawFromCandidates(logits, candidates, numKept, maxLogit, inverseTemperature);
    } else if (topP < 1) {
      const { candidates, numKept } = this.findNucleusInVocabulary(logits, maxLogit, inverseTemperature);
      tokenId = this.drawFromCandidates(logits, candidates, numKept, maxLogit, inverseTemperature);
    } else {
      tokenId = this.drawFromVocabulary(logits, maxLogit, inverseTemperature);
    }
    return { tokenId, logprob: logits[tokenId] - logNormaliser };
  }

  /** Returns how many leading `candidates` (sorted most likely first) form the nucleus within them. */
  private countNucleus(
    logits: Float32Array,
    candidates: Int32Array,
    maxLogit: number,
    inverseTemperature: number,
  ): number {
    let total = 0;
    for (let j = 0; j < candidates.length; j++) total += Math.exp((logits[candidates[j]] - maxLogit) * inverseTemperature);
    return this.countPrefixReaching(logits, candidates, total, maxLogit, inverseTemperature) ?? candidates.length;
  }

  /**
   * Returns the length of the shortest prefix of `candidates` whose mass reaches top_p of
   * `total`, or null when even all of them fall short.
   */
  private countPrefixReaching(
    logits: Float32Array,
    candidates: Int32Array,
    total: number,
    maxLogit: number,
    inverseTemperature: number,
  ): number | null {
    const targetMass = this.params.topP * total * (1 - TOP_P_RELATIVE_TOLERANCE);
    let cumulative = 0;
    for (let j = 0; j < candidates.length; j++) {
      cumulative += Math.exp((logits[candidates[j]] - maxLogit) * inverseTemperature);
      if (cumulative >= targetMass) return j + 1;
    }
    return null;
  }

  /**
   * Finds the nucleus over the whole vocabulary without sorting all of it: the top-m tokens are
   * a prefix of the fully sorted order, so if their mass reaches top_p the nucleus lies within
   * them. m starts at 256 and grows 16-fold, so a flat distribution ends in a full sort.
   */
  private findNucleusInVocabulary(
    logits: Float32Array,
    maxLogit: number,
    inverseTemperature: number,
  ): { candidates: Int32Array; numKept: number } {
    let total = 0;
    for (let i = 0; i < logits.length; i++) total += Math.exp((logits[i] - maxLogit) * inverseTemperature);

    for (let numCandidates = INITIAL_NUCLEUS_CANDIDATES; ; numCandidates *= 16) {
      const candidates = topKIndices(logits, Math.min(numCandidates, logits.length));
      const numKept = this.countPrefixReaching(logits, candidates, total, maxLogit, inverseTemperature);
      if (numKept !== null) return { candidates, numKept };
      // All tokens with nonzero probability are candidates, so their mass is the whole total.
      if (numCandidates >= logits.length || candidates.length < numCandidates) {
        return { candidates, numKept: candidates.length };
      }
    }
  }

  /** Draws one of the first `numKept` candidates in proportion to exp(logit / temperature). */
  private drawFromCandidates(
    logits: Float32Array,
    candidates: Int32Array,
    numKept: number,
    maxLogit: number,
    inverseTemperature: number,
  ): number {
    const weights = this.scratchWeights(numKept);
    let total = 0;
    for (let j = 0; j < numKept; j++) {
      const weight = Math.exp((logits[candidates[j]] - maxLogit) * inverseTemperature);
      weights[j] = weight;
      total += weight;
    }
    const index = this.drawIndex(weights, numKept, total);
    return candidates[index];
  }

  /** Draws any token in proportion to exp(logit / temperature). */
  private drawFromVocabulary(logits: Float32Array, maxLogit: number, inverseTemperature: number): number {
    const weights = this.scratchWeights(logits.length);
    let total = 0;
    for (let i = 0; i < logits.length; i++) {
      const weight = Math.exp((logits[i] - maxLogit) * inverseTemperature);
      weights[i] = weight;
      total += weight;
    }
    return this.drawIndex(weights, logits.length, total);
  }

  /** Draws an index below `count` with probability weights[i] / total, never one with zero weight. */
  private drawIndex(weights: Float64Array, count: number, total: number): number {
    const target = this.rng.nextFloat() * total;
    let cumulative = 0;
    let lastPositive = 0;
    for (let i = 0; i < count; i++) {
      const weight = weights[i];
      if (weight === 0) continue;
      cumulative += weight;
      lastPositive = i;
      if (cumulative > target) return i;
    }
    // Reached only when rounding leaves the running sum just below target.
    return lastPositive;
  }

  private scratchWeights(length: number): Float64Array {
    if (this.weights.length < length) this.weights = new Float64Array(length);
    return this.weights;
  }
}

// #endregion
