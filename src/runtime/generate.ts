/**
 * Batched generation and scoring on top of the engine. Prompts of different lengths are
 * left-padded into one batch. Each row keeps its own positions, module slot and sampler, and a
 * row leaves the batch as soon as it finishes.
 * @module
 */
import type { Engine, KvCache } from './engine.js';
import { selectCacheRows } from './kv-cache.js';
import { logSoftmax, Sampler, type SamplingParams } from './sampler.js';
import type { SlotModule } from './slot-table.js';

/** Reason a sequence stopped. */
export type FinishReason = 'length' | 'eos' | 'stop';

export interface GenerationRequest {
  /** Prompt token ids (at least one, e.g. BOS alone). */
  readonly promptIds: readonly number[];
  readonly module: SlotModule | null;
  readonly sampling: SamplingParams;
  readonly maxNewTokens: number;
  /** Token ids that end the sequence (EOS). The EOS token itself is not part of the output. */
  readonly stopTokenIds: readonly number[];
}

export interface GeneratedSequence {
  readonly tokenIds: number[];
  /** Natural log-probability of each generated token under the model (before sampling filters). */
  readonly logprobs: number[];
  finishReason: FinishReason;
}

/** Callback after each generated token; return true to stop that row (for example on a stop string). */
export type TokenCallback = (row: number, tokenId: number, logprob: number) => boolean;

export class GenerationError extends Error {
  override readonly name = 'GenerationError';
}

/** Checks one request against the model's limits; throws {@link GenerationError} naming the problem. */
export function validateRequest(engine: Engine, request: GenerationRequest): void {
  const { maxPositions, vocabSize } = engine.config;
  if (request.promptIds.length === 0) throw new GenerationError('prompt is empty: pass at least one token (for example BOS)');
  for (const id of request.promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new GenerationError(`prompt token id ${id} is outside the vocabulary [0, ${vocabSize})`);
  }
  if (!Number.isInteger(request.maxNewTokens) || request.maxNewTokens < 0) {
    throw new GenerationError(`max new tokens must be a non-negative integer, got ${request.maxNewTokens}`);
  }
  if (request.promptIds.length + request.maxNewTokens > maxPositions) {
    throw new GenerationError(
      `prompt of ${request.promptIds.length} tokens plus ${request.maxNewTokens} new tokens exceeds the model's context of ${maxPositions} tokens; shorten the prompt or lower max tokens`,
    );
  }
}

interface Row {
  readonly request: number;
  readonly sampler: Sampler;
  /** Real tokens in the cache plus the pending token. */
  numTokens: number;
  /** Mask over the cached columns (0 = padding). */
  mask: number[];
  pending: number;
}

/** Generates continuations for all requests in one batch. Results are in request order. */
export async function generateBatch(engine: Engine, requests: readonly GenerationRequest[], onToken?: TokenCallback): Promise<GeneratedSequence[]> {
  requests.forEach((r) => validateRequest(engine, r));
  const results: GeneratedSequence[] = requests.map(() => ({ tokenIds: [], logprobs: [], finishReason: 'length' }));
  const active = requests.map((_, i) => i).filter((i) => requests[i].maxNewTokens > 0);
  if (active.length === 0) return results;

  // Prefill: left-pad every prompt to the longest one.
  const width = Math.max(...active.map((i) => requests[i].promptIds.length));
  const inputIds: number[][] = [];
  const positionIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const i of active) {
    const prompt = requests[i].promptIds;
    const padding = width - prompt.length;
    inputIds.push([...new Array<number>(padding).fill(0), ...prompt]);
    positionIds.push(Array.from({ length: width }, (_, c) => Math.max(0, c - padding)));
    attentionMask.push([...new Array<number>(padding).fill(0), ...new Array<number>(prompt.length).fill(1)]);
  }
  let slotIds = engine.slots.slotsFor(active.map((i) => requests[i].module));
  let rows: Row[] = active.map((i, r) => ({
    request: i,
    sampler: new Sampler(requests[i].sampling),
    numTokens: requests[i].promptIds.length,
    mask: attentionMask[r],
    pending: -1,
  }));
  let step = await engine.forward({
    inputIds,
    positionIds,
    attentionMask,
    logitsIndices: rows.map((_, r) => r * width + width - 1),
    slotIds,
    past: null,
  });
  let cache: KvCache = step.present;

  for (;;) {
    // Sample one token per row, then drop finished rows from the batch.
    const keep: number[] = [];
    rows.forEach((row, r) => {
      const logits = step.logits.subarray(r * step.vocabSize, (r + 1) * step.vocabSize);
      const { tokenId, logprob } = row.sampler.sample(logits);
      const request = requests[row.request];
      const result = results[row.request];
      if (request.stopTokenIds.includes(tokenId)) {
        result.finishReason = 'eos';
        return;
      }
      result.tokenIds.push(tokenId);
      result.logprobs.push(logprob);
      if (onToken?.(row.request, tokenId, logprob)) {
        result.finishReason = 'stop';
        return;
      }
      if (result.tokenIds.length >= request.maxNewTokens) return;
      row.pending = tokenId;
      keep.push(r);
    });
    if (keep.length === 0) return results;
    if (keep.length < rows.length) {
      cache = selectCacheRows(cache, keep);
      rows = keep.map((r) => rows[r]);
      slotIds = keep.map((r) => slotIds[r]);
    }
    for (const row of rows) row.mask = [...row.mask, 1];
    step = await engine.forward({
      inputIds: rows.map((row) => [row.pending]),
      positionIds: rows.map((row) => [row.numTokens++]),
      attentionMask: rows.map((row) => row.mask),
      logitsIndices: rows.map((_, r) => r),
      slotIds,
      past: cache,
    });
    cache = step.present;
  }
}

/**
 * Log-probabilities of each token given the ones before it: entry i is log p(ids[i+1] | ids[0..i]).
 * Returns one entry fewer than `ids` has.
 */
export async function scoreTokens(engine: Engine, ids: readonly number[], module: SlotModule | null): Promise<number[]> {
  if (ids.length > engine.config.maxPositions) {
    throw new GenerationError(`text has ${ids.length} tokens but the model's context is ${engine.config.maxPositions} tokens`);
  }
  if (ids.length < 2) return [];
  const [slot] = engine.slots.slotsFor([module]);
  const out = await engine.forward({
    inputIds: [ids],
    positionIds: [ids.map((_, i) => i)],
    attentionMask: [ids.map(() => 1)],
    logitsIndices: ids.slice(0, -1).map((_, i) => i),
    slotIds: [slot],
    past: null,
  });
  const logprobs: number[] = [];
  for (let i = 0; i + 1 < ids.length; i++) {
    const row = logSoftmax(out.logits.subarray(i * out.vocabSize, (i + 1) * out.vocabSize));
    logprobs.push(row[ids[i + 1]]);
  }
  return logprobs;
}
