/**
 * Training data: JSONL files of `{"prompt", "completion"}` or `{"text"}` records, tokenized into
 * examples with next-token labels, ordered per epoch (seeded shuffle, optional length buckets)
 * and collated into right-padded batches.
 *
 * Labels follow the Hugging Face convention shifted by one: `labels[t]` is the id of token t+1
 * when that token is a target, else −100. Targets are the completion tokens plus the EOS token
 * appended after them, or every token after the first for a `text` record (EOS appended too, so
 * the model learns where a document ends).
 * @module
 */
import { readFile } from 'node:fs/promises';
import type { TextTokenizer } from '../model/tokenizer.js';
import { createRng } from '../runtime/rng.js';

/** Label value of positions that do not count in the loss (prompt, last position, padding). */
export const IGNORE_INDEX = -100;

/** Lines quoted in a {@link DataError} message before the rest are only counted. */
const MAX_REPORTED_LINES = 5;

/** Examples per length bucket, as a multiple of the batch size, when bucketing by length. */
const BUCKET_SIZE_IN_BATCHES = 50;

/** Error for a data file that cannot be read or contains invalid records; the message names the file and line. */
export class DataError extends Error {
  override readonly name = 'DataError';
}

/** One valid line of a data file. `line` is 1-based. */
export type DataRecord =
  | { readonly kind: 'completion'; readonly line: number; readonly prompt: string; readonly completion: string }
  | { readonly kind: 'text'; readonly line: number; readonly text: string };

/** One batch, right-padded; the shape that the training session consumes. */
export interface TrainingBatch {
  /** Token ids `[B][T]`; padding positions hold the pad id. */
  readonly inputIds: readonly (readonly number[])[];
  /** `[B][T]`: 1 for a real token, 0 for padding. */
  readonly attentionMask: readonly (readonly number[])[];
  /** `[B][T]`: id of token t+1 when it is a target, else {@link IGNORE_INDEX}. */
  readonly labels: readonly (readonly number[])[];
}

/** A tokenized record. `labels` has the length of `inputIds`. */
export interface TrainingExample {
  readonly inputIds: readonly number[];
  readonly labels: readonly number[];
  readonly numTargetTokens: number;
  /** Line of the record in its file (1-based), for messages. */
  readonly line: number;
}

/** Counts from {@link tokenizeRecords}. */
export interface TokenizationStats {
  readonly numRecords: number;
  readonly numExamples: number;
  /** Examples cut to the maximum length; they lose their last tokens (and EOS). */
  readonly numTruncated: number;
  /** Records skipped because the prompt alone fills the maximum length, so no target token fits. */
  readonly numSkippedLongPrompt: number;
  /** Records skipped because they have no target token at all (for example a one-token text without BOS or EOS). */
  readonly numSkippedNoTarget: number;
  /**
   * Records whose prompt tokens change when the completion follows them (a token merges across
   * the boundary); their completion is tokenized on its own instead.
   */
  readonly numBoundaryMerges: number;
  /** Tokens of all examples, including the prompt. */
  readonly numTokens: number;
  readonly numTargetTokens: number;
}

/** The parts of a tokenizer that tokenization uses. */
export type ExampleTokenizer = Pick<TextTokenizer, 'encode' | 'eosTokenIds'>;

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}

/** Checks one parsed line; returns the record or the problem. */
function toRecord(value: unknown, line: number): DataRecord | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return `expected a JSON object, found ${describeValue(value)}`;
  }
  const fields = value as Record<string, unknown>;
  const hasText = 'text' in fields;
  const hasPair = 'prompt' in fields || 'completion' in fields;
  if (hasText && hasPair) return 'has both "text" and "prompt"/"completion"; use one form per line';
  if (!hasText && !hasPair) return 'has neither "text" nor "prompt" and "completion"';

  const nonEmptyString = (name: string): string | null => {
    const field = fields[name];
    if (field === undefined) return `field "${name}" is missing`;
    if (typeof field !== 'string') return `field "${name}" must be a string, found ${describeValue(field)}`;
    if (field.length === 0) return `field "${name}" is empty`;
    return null;
  };
  if (hasText) {
    const problem = nonEmptyString('text');
    return problem ?? { kind: 'text', line, text: fields.text as string };
  }
  const problem = nonEmptyString('prompt') ?? nonEmptyString('completion');
  return problem ?? { kind: 'completion', line, prompt: fields.prompt as string, completion: fields.completion as string };
}

/**
 * Parses JSONL text: one record per line, blank lines ignored. Throws {@link DataError} listing
 * every invalid line (the first few quoted with their line numbers) or when there is no record.
 * `source` names the file in messages.
 */
export function parseJsonlRecords(text: string, source: string): DataRecord[] {
  const records: DataRecord[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineText = lines[i].trim();
    if (lineText === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(lineText);
    } catch (cause) {
      problems.push(`${source}:${i + 1}: invalid JSON (${(cause as Error).message})`);
      continue;
    }
    const record = toRecord(value, i + 1);
    if (typeof record === 'string') problems.push(`${source}:${i + 1}: ${record}`);
    else records.push(record);
  }
  if (problems.length > 0) {
    const more = problems.length > MAX_REPORTED_LINES ? `; and ${problems.length - MAX_REPORTED_LINES} more invalid line(s)` : '';
    throw new DataError(
      `${problems.length} invalid line(s) in ${source}: ${problems.slice(0, MAX_REPORTED_LINES).join('; ')}${more}. ` +
        'Each line must be a JSON object {"prompt": "...", "completion": "..."} or {"text": "..."} with non-empty strings',
    );
  }
  if (records.length === 0) {
    throw new DataError(`${source} contains no records; add lines of the form {"prompt": "...", "completion": "..."} or {"text": "..."}`);
  }
  return records;
}

/** Reads and parses a JSONL data file; see {@link parseJsonlRecords}. */
export async function readJsonlFile(file: string): Promise<DataRecord[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new DataError(`failed to read data file ${file}: ${(cause as Error).message}`, { cause });
  }
  return parseJsonlRecords(text, file);
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  if (prefix.length > ids.length) return false;
  return prefix.every((id, i) => ids[i] === id);
}

/**
 * Tokenizes records into examples of at most `maxLength` tokens.
 *
 * A prompt is encoded as the tokenizer encodes a prompt for generation (with BOS when the
 * tokenizer adds one), so training gets the same prompt tokens as inference. The completion's
 * tokens are taken from the encoding of prompt + completion after the prompt's tokens, which
 * keeps word-start markers such as SentencePiece's `▁` as they appear in running text. When a
 * token merges across the boundary, the completion is encoded on its own (counted in
 * `numBoundaryMerges`). The first EOS id is appended to every example when the tokenizer has one.
 * Longer examples are truncated at the end; records whose prompt fills `maxLength` are skipped
 * and counted. Throws {@link DataError} when no example remains or a completion has no tokens.
 */
export function tokenizeRecords(
  records: readonly DataRecord[],
  tokenizer: ExampleTokenizer,
  options: { maxLength: number; source: string },
): { examples: TrainingExample[]; stats: TokenizationStats } {
  const { maxLength, source } = options;
  if (!Number.isSafeInteger(maxLength) || maxLength < 2) {
    throw new DataError(`invalid maximum length ${maxLength}: expected an integer >= 2 (a prompt token and a target)`);
  }
  const eos = tokenizer.eosTokenIds.length > 0 ? [tokenizer.eosTokenIds[0]] : [];
  const examples: TrainingExample[] = [];
  let numTruncated = 0;
  let numSkippedLongPrompt = 0;
  let numSkippedNoTarget = 0;
  let numBoundaryMerges = 0;
  let numTokens = 0;
  let numTargetTokens = 0;

  for (const record of records) {
    let ids: number[];
    let firstTarget: number; // index of the first token that is a target
    if (record.kind === 'text') {
      ids = [...tokenizer.encode(record.text), ...eos];
      firstTarget = 1;
    } else {
      const promptIds = tokenizer.encode(record.prompt);
      const jointIds = tokenizer.encode(record.prompt + record.completion);
      let completionIds: number[];
      if (startsWith(jointIds, promptIds)) {
        completionIds = jointIds.slice(promptIds.length);
      } else {
        numBoundaryMerges++;
        completionIds = tokenizer.encode(record.completion, { addSpecialTokens: false });
      }
      if (completionIds.length === 0) {
        throw new DataError(`${source}:${record.line}: the completion ${JSON.stringify(record.completion)} encodes to no tokens; give it visible text`);
      }
      if (promptIds.length >= maxLength) {
        numSkippedLongPrompt++;
        continue;
      }
      ids = [...promptIds, ...completionIds, ...eos];
      firstTarget = Math.max(1, promptIds.length);
    }

    if (ids.length > maxLength) {
      ids = ids.slice(0, maxLength);
      numTruncated++;
    }
    const labels = new Array<number>(ids.length).fill(IGNORE_INDEX);
    let targets = 0;
    for (let t = firstTarget - 1; t + 1 < ids.length; t++) {
      labels[t] = ids[t + 1];
      targets++;
    }
    if (targets === 0) {
      numSkippedNoTarget++;
      continue;
    }
    examples.push({ inputIds: ids, labels, numTargetTokens: targets, line: record.line });
    numTokens += ids.length;
    numTargetTokens += targets;
  }

  if (examples.length === 0) {
    throw new DataError(
      `${source}: none of the ${records.length} record(s) gives a training example ` +
        `(${numSkippedLongPrompt} with a prompt of ${maxLength} or more tokens, ${numSkippedNoTarget} without a target token); ` +
        'raise --max-length or shorten the prompts',
    );
  }
  const stats: TokenizationStats = {
    numRecords: records.length,
    numExamples: examples.length,
    numTruncated,
    numSkippedLongPrompt,
    numSkippedNoTarget,
    numBoundaryMerges,
    numTokens,
    numTargetTokens,
  };
  return { examples, stats };
}

/**
 * Derives a seed in [0, 2^53) from a base seed and further integers (such as an epoch or a
 * step), so that streams for different purposes are independent but reproducible.
 */
export function deriveSeed(seed: number, ...parts: number[]): number {
  const rng = createRng(seed);
  let mixed = rng.nextUint32() * 2097152 + (rng.nextUint32() >>> 11);
  for (const part of parts) {
    const partRng = createRng((mixed + part) % Number.MAX_SAFE_INTEGER);
    mixed = partRng.nextUint32() * 2097152 + (partRng.nextUint32() >>> 11);
  }
  return mixed;
}

/** Settings of {@link planEpoch}. */
export interface EpochPlanSettings {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  /** Group examples of similar length into the same batch to reduce padding. */
  readonly bucketByLength: boolean;
}

/** Shuffles `values` in place with a Fisher-Yates pass driven by `seed`. */
function shuffleInPlace<T>(values: T[], seed: number): void {
  const rng = createRng(seed);
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextFloat() * (i + 1));
    [values[i], values[j]] = [values[j], values[i]];
  }
}

/**
 * Returns the batches of epoch `epoch` (0-based) as lists of example indices. The order depends
 * only on the settings, the epoch and the example lengths, so a resumed run can rebuild it. The
 * last batch may be smaller than `batchSize`. With `bucketByLength`, the shuffled examples are cut
 * into buckets of 50 batches, each bucket is sorted by length, and the batches are shuffled again.
 */
export function planEpoch(lengths: readonly number[], epoch: number, settings: EpochPlanSettings): number[][] {
  const { batchSize } = settings;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new DataError(`invalid batch size ${batchSize}: expected an integer >= 1`);
  }
  const order = lengths.map((_, i) => i);
  if (settings.shuffle) shuffleInPlace(order, deriveSeed(settings.seed, 1, epoch));
  if (settings.bucketByLength) {
    const bucketSize = batchSize * BUCKET_SIZE_IN_BATCHES;
    for (let start = 0; start < order.length; start += bucketSize) {
      const bucket = order.slice(start, start + bucketSize).sort((a, b) => lengths[b] - lengths[a] || a - b);
      // A loop, not splice(...bucket): spreading a bucket of 50 large batches overflows the call stack.
      for (let i = 0; i < bucket.length; i++) order[start + i] = bucket[i];
    }
  }
  const batches: number[][] = [];
  for (let start = 0; start < order.length; start += batchSize) batches.push(order.slice(start, start + batchSize));
  if (settings.bucketByLength && settings.shuffle) shuffleInPlace(batches, deriveSeed(settings.seed, 2, epoch));
  return batches;
}

/** Number of batches per epoch for `numExamples` examples. */
export function batchesPerEpoch(numExamples: number, batchSize: number): number {
  return Math.ceil(numExamples / batchSize);
}

/** Builds a right-padded batch from the examples at `indices`; padding uses `padId` with mask 0 and label −100. */
export function collateBatch(examples: readonly TrainingExample[], indices: readonly number[], padId: number): TrainingBatch {
  let width = 0;
  for (const index of indices) width = Math.max(width, examples[index].inputIds.length);
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  const labels: number[][] = [];
  for (const index of indices) {
    const example = examples[index];
    const padding = width - example.inputIds.length;
    inputIds.push([...example.inputIds, ...new Array<number>(padding).fill(padId)]);
    attentionMask.push([...new Array<number>(example.inputIds.length).fill(1), ...new Array<number>(padding).fill(0)]);
    labels.push([...example.labels, ...new Array<number>(padding).fill(IGNORE_INDEX)]);
  }
  return { inputIds, attentionMask, labels };
}

/** Counts the real (unpadded) tokens of a batch. */
export function countBatchTokens(batch: TrainingBatch): number {
  let count = 0;
  for (const row of batch.attentionMask) for (const value of row) count += value;
  return count;
}
