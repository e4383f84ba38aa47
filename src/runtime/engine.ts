/**
 * The engine: one ONNX Runtime session over the decoder graph of a frozen checkpoint, plus the
 * module slot table. One `forward` call is one `session.run` over a batch of rows, each with
 * its own module slot, positions and padding.
 * @module
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { serializeModel } from '../graph/onnx-writer.js';
import type { ModelConfig } from '../model/config.js';
import { buildDecoderGraph } from '../model/decoder.js';
import { INPUT, OUTPUT_LOGITS, pastKey, pastValue, presentKey, presentValue } from '../model/graph-io.js';
import type { HostTensor } from '../model/tensor.js';
import { SlotTable } from './slot-table.js';

/** Settings of {@link Engine.create}. */
export interface EngineOptions {
  /** Module slots besides the zero slot; bounds the distinct modules in one batch. Default 8. */
  readonly slotCapacity?: number;
  /** ONNX Runtime intra-op threads; default lets ONNX Runtime choose (one per core). */
  readonly intraOpThreads?: number;
  /** Execution providers in order of preference, e.g. `['cuda', 'cpu']`. Default `['cpu']`. */
  readonly executionProviders?: readonly string[];
  /**
   * Models whose weights exceed this many bytes are written with external data to `cacheDir`
   * and loaded from there, because a protobuf message cannot exceed 2 GiB. Default 1 GiB.
   */
  readonly externalDataThresholdBytes?: number;
  /** Folder for serialized graphs with external data. Default `$INDUCER_CACHE_DIR` or `~/.cache/inducer-serve`. */
  readonly cacheDir?: string;
}

/** Per-layer key/value tensors of a batch: each [batch, kv_heads, length, head_dim]. */
export interface KvCache {
  readonly keys: readonly ort.Tensor[];
  readonly values: readonly ort.Tensor[];
  readonly batchSize: number;
  readonly length: number;
}

/** One forward call. Row-major int arrays; every row of a field has the same length. */
export interface ForwardInput {
  /** [batch][seq] new token ids (padding ids are ignored through the mask). */
  readonly inputIds: readonly (readonly number[])[];
  /** [batch][seq] absolute positions of the new tokens. */
  readonly positionIds: readonly (readonly number[])[];
  /** [batch][past + seq]: 1 for real tokens, 0 for padding. */
  readonly attentionMask: readonly (readonly number[])[];
  /** Indices into the flattened [batch * seq] positions whose logits to return. */
  readonly logitsIndices: readonly number[];
  /** [batch] module slot per row (from {@link SlotTable.slotsFor}). */
  readonly slotIds: readonly number[];
  /** Cache of the previous call for the same rows, or null for a first call. */
  readonly past: KvCache | null;
}

export interface ForwardOutput {
  /** [rows * vocab] logits, one row per entry of `logitsIndices`. */
  readonly logits: Float32Array;
  readonly vocabSize: number;
  readonly present: KvCache;
}

export class EngineInputError extends Error {
  override readonly name = 'EngineInputError';
}

function int64Tensor(rows: readonly (readonly number[])[], name: string): ort.Tensor {
  const width = rows[0]?.length ?? 0;
  const data = new BigInt64Array(rows.length * width);
  rows.forEach((row, r) => {
    if (row.length !== width) throw new EngineInputError(`${name}: row ${r} has ${row.length} entries, expected ${width}`);
    for (let c = 0; c < width; c++) data[r * width + c] = BigInt(row[c]);
  });
  return new ort.Tensor('int64', data, [rows.length, width]);
}

function defaultCacheDir(): string {
  return process.env.INDUCER_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'inducer-serve');
}

/** Runs the decoder graph of one checkpoint. Create with {@link Engine.create}; call {@link Engine.dispose} when done. */
export class Engine {
  private constructor(
    readonly config: ModelConfig,
    readonly slots: SlotTable,
    private readonly session: ort.InferenceSession,
    /** Seconds spent building, serializing and loading the graph. */
    readonly loadSeconds: number,
  ) {}

  static async create(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, options: EngineOptions = {}): Promise<Engine> {
    const started = performance.now();
    const graph = buildDecoderGraph(config, weights);
    let weightBytes = 0;
    for (const t of weights.values()) weightBytes += t.data.byteLength;
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: 'all',
      executionProviders: [...(options.executionProviders ?? ['cpu'])] as ort.InferenceSession.ExecutionProviderConfig[],
      ...(options.intraOpThreads ? { intraOpNumThreads: options.intraOpThreads } : {}),
    };
    const threshold = options.externalDataThresholdBytes ?? 2 ** 30;
    let session: ort.InferenceSession;
    if (weightBytes < threshold) {
      session = await ort.InferenceSession.create(serializeModel(graph).model, sessionOptions);
    } else {
      const modelPath = await writeExternalModel(graph, options.cacheDir ?? defaultCacheDir());
      session = await ort.InferenceSession.create(modelPath, sessionOptions);
    }
    const slots = new SlotTable(config, options.slotCapacity ?? 8);
    return new Engine(config, slots, session, (performance.now() - started) / 1000);
  }

  /** Creates an empty cache for `batchSize` rows. */
  emptyCache(batchSize: number): KvCache {
    const { numLayers, numKeyValueHeads, headDim } = this.config;
    const empty = (): ort.Tensor => new ort.Tensor('float32', new Float32Array(0), [batchSize, numKeyValueHeads, 0, headDim]);
    return {
      keys: Array.from({ length: numLayers }, empty),
      values: Array.from({ length: numLayers }, empty),
      batchSize,
      length: 0,
    };
  }

  /** Runs one step. Throws {@link EngineInputError} when the fields disagree in batch size or length. */
  async forward(input: ForwardInput): Promise<ForwardOutput> {
    const batch = input.inputIds.length;
    if (batch === 0) throw new EngineInputError('forward: empty batch');
    const past = input.past ?? this.emptyCache(batch);
    const seq = input.inputIds[0].length;
    if (past.batchSize !== batch) throw new EngineInputError(`forward: cache has ${past.batchSize} rows but the batch has ${batch}`);
    if (input.attentionMask[0]?.length !== past.length + seq) {
      throw new EngineInputError(`forward: attention mask covers ${input.attentionMask[0]?.length} tokens, expected past ${past.length} + new ${seq}`);
    }
    if (input.slotIds.length !== batch || input.positionIds.length !== batch || input.attentionMask.length !== batch) {
      throw new EngineInputError('forward: input_ids, position_ids, attention_mask and slot_ids must have one row per batch row');
    }
    for (const index of input.logitsIndices) {
      if (!Number.isInteger(index) || index < 0 || index >= batch * seq) {
        throw new EngineInputError(`forward: logits index ${index} is outside [0, ${batch * seq})`);
      }
    }
    const feeds: Record<string, ort.Tensor> = {
      [INPUT.inputIds]: int64Tensor(input.inputIds, INPUT.inputIds),
      [INPUT.positionIds]: int64Tensor(input.positionIds, INPUT.positionIds),
      [INPUT.attentionMask]: int64Tensor(input.attentionMask, INPUT.attentionMask),
      [INPUT.logitsIndices]: new ort.Tensor('int64', BigInt64Array.from(input.logitsIndices.map(BigInt)), [input.logitsIndices.length]),
      [INPUT.slotIds]: new ort.Tensor('int64', BigInt64Array.from(input.slotIds.map(BigInt)), [batch]),
    };
    for (const [name, buffer] of this.slots.feeds()) feeds[name] = new ort.Tensor('float32', buffer.data, buffer.dims);
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      feeds[pastKey(layer)] = past.keys[layer];
      feeds[pastValue(layer)] = past.values[layer];
    }
    const out = await this.session.run(feeds);
    const keys: ort.Tensor[] = [];
    const values: ort.Tensor[] = [];
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      keys.push(out[presentKey(layer)]);
      values.push(out[presentValue(layer)]);
    }
    const logits = out[OUTPUT_LOGITS];
    return {
      logits: logits.data as Float32Array,
      vocabSize: logits.dims[1],
      present: { keys, values, batchSize: batch, length: past.length + seq },
    };
  }

  /** Releases the session. The engine cannot run afterwards. */
  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Writes the graph with external weights to `<cacheDir>/<hash>/model.onnx` (reusing an existing
 * copy with the same content hash) and returns the model path.
 */
async function writeExternalModel(graph: ReturnType<typeof buildDecoderGraph>, cacheDir: string): Promise<string> {
  const serialized = serializeModel(graph, { externalThresholdBytes: 1024, externalDataFile: 'model.onnx.data' });
  const hash = createHash('sha256');
  hash.update(serialized.model);
  for (const chunk of serialized.externalData) hash.update(chunk);
  const folder = path.join(cacheDir, hash.digest('hex').slice(0, 32));
  const modelPath = path.join(folder, 'model.onnx');
  const done = await stat(modelPath).then(() => true, () => false);
  if (done) return modelPath;
  const temporary = `${folder}.tmp-${process.pid}`;
  await mkdir(temporary, { recursive: true });
  await writeFile(path.join(temporary, 'model.onnx.data'), Buffer.concat(serialized.externalData as Uint8Array[]));
  await writeFile(path.join(temporary, 'model.onnx'), serialized.model);
  await rename(temporary, folder).catch(async (cause: NodeJS.ErrnoException) => {
    if (cause.code !== 'ENOTEMPTY' && cause.code !== 'EEXIST') throw cause;
  });
  return modelPath;
}
