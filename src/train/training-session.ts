/**
 * Forward and backward passes of module training (inducer-tuning, prefix-tuning or LoRA) on ONNX Runtime. One session runs the
 * training graph (loss and gradients, with dropout masks when dropout > 0). A second,
 * forward-only session without gradients or masks serves {@link TrainingSession.evaluate}; it is
 * created on the first call, so a run that never evaluates does not pay for it.
 *
 * The trained module sits in slot 1 of the decoder's stacked module inputs and every batch row
 * uses it; slot 0 stays zero. Module ranks and the prefix length are exact (no padding), so the
 * slot-1 gradient of a stacked input, cut per layer, is the gradient of the module-file tensor.
 * @module
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Graph } from '../graph/ir.js';
import { serializeModel } from '../graph/onnx-writer.js';
import type { ModelConfig } from '../model/config.js';
import { INPUT, MODULE_INPUT, pastKey, pastValue, type ModuleInputName } from '../model/graph-io.js';
import { formatShape, type HostTensor } from '../model/tensor.js';
import { createRng } from '../runtime/rng.js';
import { tensorSuffixes } from '../runtime/slot-table.js';
import { hasKeyMlp } from '../tuning/inducer.js';
import { moduleTensorShapes, validateMethodSettings, type MethodSettings } from '../tuning/method.js';
import { buildTrainingGraph, dropoutMasksOf, gradientOutput, TRAINING_IO } from './training-graph.js';

/** One batch, right-padded. labels[b][t] is the target for position t (the id of token t+1) or -100 to ignore. */
export interface TrainingBatch {
  readonly inputIds: readonly (readonly number[])[];
  readonly attentionMask: readonly (readonly number[])[]; // 1 real, 0 padding
  readonly labels: readonly (readonly number[])[];
}

export interface TrainingOptions {
  readonly labelSmoothing: number; // 0..<1, applied in step() only
  readonly dropout: number; // probability for dropout on lambda and on the LoRA input (none for prefix modules), step() only
}

export interface StepResult {
  /** Mean loss over target tokens of this batch (with label smoothing when set), before any update. */
  readonly loss: number;
  readonly numTargetTokens: number;
  /** d loss / d parameter for every module tensor, by module-file tensor name (e.g. `layers.0.inducer.value.up.weight`). */
  readonly gradients: ReadonlyMap<string, Float32Array>;
}

/** Label that marks a position without a target, as in PyTorch's `ignore_index`. */
export const IGNORE_LABEL = -100;

/** Error for invalid training options or hyper-parameters. */
export class TrainingOptionsError extends Error {
  override readonly name = 'TrainingOptionsError';
}

/** Error for a batch or a parameter map that does not fit the model or the module. */
export class TrainingInputError extends Error {
  override readonly name = 'TrainingInputError';
}

/** Models with at least this many weight bytes are loaded through an external data file (protobuf caps a message at 2 GiB). */
const EXTERNAL_DATA_THRESHOLD_BYTES = 2 ** 30;

async function createOrtSession(graph: Graph, weightBytes: number): Promise<ort.InferenceSession> {
  // One intra-op thread by default: ONNX Runtime's multithreaded reductions add in a varying order,
  // and Adam magnifies those last-bit differences, so equal seeds would not give equal modules.
  // INDUCER_TRAIN_THREADS trades that determinism for speed on machines with many cores.
  const threads = Number(process.env.INDUCER_TRAIN_THREADS ?? 1);
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    intraOpNumThreads: Number.isInteger(threads) && threads > 0 ? threads : 1,
    interOpNumThreads: 1,
  };
  if (weightBytes < EXTERNAL_DATA_THRESHOLD_BYTES) return ort.InferenceSession.create(serializeModel(graph).model, sessionOptions);

  // ONNX Runtime reads external data at session creation, so the folder can go right after.
  const serialized = serializeModel(graph, { externalThresholdBytes: 1024, externalDataFile: 'model.onnx.data' });
  const folder = await mkdtemp(path.join(os.tmpdir(), 'inducer-training-'));
  try {
    await writeFile(path.join(folder, 'model.onnx.data'), Buffer.concat(serialized.externalData as Uint8Array[]));
    await writeFile(path.join(folder, 'model.onnx'), serialized.model);
    return await ort.InferenceSession.create(path.join(folder, 'model.onnx'), sessionOptions);
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

function validateOptions(options: TrainingOptions): void {
  const { labelSmoothing, dropout } = options;
  if (!Number.isFinite(labelSmoothing) || labelSmoothing < 0 || labelSmoothing >= 1) {
    throw new TrainingOptionsError(`invalid labelSmoothing ${labelSmoothing}: expected a number in [0, 1), e.g. 0.1`);
  }
  if (!Number.isFinite(dropout) || dropout < 0 || dropout >= 1) {
    throw new TrainingOptionsError(`invalid dropout ${dropout}: expected a probability in [0, 1), e.g. 0.1`);
  }
}

/** A batch as graph inputs: flattened ids, positions and mask, and the target rows with their labels. */
interface PreparedBatch {
  readonly batchSize: number;
  readonly seqLength: number;
  readonly feeds: Record<string, ort.Tensor>;
  /** Number of target tokens (rows of the logits). */
  readonly numTargets: number;
}

function int64(values: readonly number[] | BigInt64Array, dims: readonly number[]): ort.Tensor {
  const data = values instanceof BigInt64Array ? values : BigInt64Array.from(values, (v) => BigInt(v));
  return new ort.Tensor('int64', data, dims);
}

/**
 * Validates `batch` and converts it to the decoder's inputs. Padding gets position 0; every
 * position with a label other than -100 becomes a logits row.
 */
function prepareBatch(config: ModelConfig, batch: TrainingBatch): PreparedBatch {
  const B = batch.inputIds.length;
  if (B === 0) throw new TrainingInputError('training batch has no rows; pass at least one sequence');
  if (batch.attentionMask.length !== B || batch.labels.length !== B) {
    throw new TrainingInputError(
      `training batch has ${B} rows of input ids but ${batch.attentionMask.length} of attention mask and ${batch.labels.length} of labels; pass one row of each per sequence`,
    );
  }
  const N = batch.inputIds[0].length;
  if (N === 0) throw new TrainingInputError('training batch rows are empty; pass at least one token per row');
  if (N > config.maxPositions) {
    throw new TrainingInputError(`training batch rows have ${N} tokens but the model allows at most ${config.maxPositions} positions; truncate the sequences`);
  }

  const ids = new BigInt64Array(B * N);
  const positions = new BigInt64Array(B * N);
  const mask = new BigInt64Array(B * N);
  const rows: number[] = [];
  const labels: number[] = [];
  for (let r = 0; r < B; r++) {
    const rowIds = batch.inputIds[r];
    const rowMask = batch.attentionMask[r];
    const rowLabels = batch.labels[r];
    if (rowIds.length !== N || rowMask.length !== N || rowLabels.length !== N) {
      throw new TrainingInputError(
        `training batch row ${r} has ${rowIds.length} input ids, ${rowMask.length} mask entries and ${rowLabels.length} labels; every row must have ${N} of each (right-pad the batch)`,
      );
    }
    let position = 0;
    for (let t = 0; t < N; t++) {
      const id = rowIds[t];
      const present = rowMask[t];
      const label = rowLabels[t];
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new TrainingInputError(`training batch row ${r} position ${t}: token id ${id} is outside the vocabulary [0, ${config.vocabSize})`);
      }
      if (present !== 0 && present !== 1) {
        throw new TrainingInputError(`training batch row ${r} position ${t}: attention mask value ${present} is invalid; use 1 for real tokens and 0 for padding`);
      }
      if (present === 1 && t > 0 && rowMask[t - 1] === 0) {
        throw new TrainingInputError(`training batch row ${r}: a real token at position ${t} follows padding; the batch must be right-padded`);
      }
      if (label !== IGNORE_LABEL && (!Number.isInteger(label) || label < 0 || label >= config.vocabSize)) {
        throw new TrainingInputError(`training batch row ${r} position ${t}: label ${label} is neither ${IGNORE_LABEL} nor a token id in [0, ${config.vocabSize})`);
      }
      if (label !== IGNORE_LABEL && present === 0) {
        throw new TrainingInputError(`training batch row ${r} position ${t}: padding has label ${label}; set labels of padding to ${IGNORE_LABEL}`);
      }
      const index = r * N + t;
      ids[index] = BigInt(id);
      mask[index] = BigInt(present);
      positions[index] = present === 1 ? BigInt(position++) : 0n;
      if (label !== IGNORE_LABEL) {
        rows.push(index);
        labels.push(label);
      }
    }
  }

  const feeds: Record<string, ort.Tensor> = {
    [INPUT.inputIds]: int64(ids, [B, N]),
    [INPUT.positionIds]: int64(positions, [B, N]),
    [INPUT.attentionMask]: int64(mask, [B, N]),
    [INPUT.logitsIndices]: int64(rows, [rows.length]),
    [INPUT.slotIds]: int64(new Array<number>(B).fill(1), [B]),
    [TRAINING_IO.labels]: int64(labels, [labels.length]),
  };
  for (let layer = 0; layer < config.numLayers; layer++) {
    const empty = new ort.Tensor('float32', new Float32Array(0), [B, config.numKeyValueHeads, 0, config.headDim]);
    feeds[pastKey(layer)] = empty;
    feeds[pastValue(layer)] = empty;
  }
  return { batchSize: B, seqLength: N, feeds, numTargets: rows.length };
}

/**
 * Fills `data` with inverted-dropout mask values: 0 with probability `p`, else 1/(1-p). A 32-bit
 * draw below p * 2^32 drops the entry.
 */
function fillDropoutMask(data: Float32Array, p: number, rng: ReturnType<typeof createRng>): void {
  const threshold = p * 4294967296;
  const kept = 1 / (1 - p);
  for (let i = 0; i < data.length; i++) data[i] = rng.nextUint32() < threshold ? 0 : kept;
}

/**
 * Stacked module input buffers `[2, L, ...]` with the trained module in slot 1 and zeros in slot 0.
 * Inputs that the module lacks (other methods, key MLP below rank 2, LoRA-Q when off) have rank 1
 * and stay zero.
 */
class ModuleBuffers {
  readonly buffers = new Map<ModuleInputName, { data: Float32Array; dims: number[] }>();
  /** Module-file tensor names per stacked input, in layer order, for the inputs the module has. */
  private readonly fileNames = new Map<ModuleInputName, string[]>();

  constructor(
    private readonly config: ModelConfig,
    hp: MethodSettings,
    private readonly parameterShapes: ReadonlyMap<string, readonly number[]>,
  ) {
    const { numLayers: L, numHeads: H, numKeyValueHeads: KVH, headDim: d, hiddenSize: D } = config;
    const inducer = hp.method === undefined || hp.method === 'inducer' ? hp : null;
    const rk = inducer !== null && hasKeyMlp(inducer.keyRank) ? inducer.keyRank : 1;
    const rv = inducer?.valueRank ?? 1;
    const r = hp.method === 'lora' ? hp.rank : (inducer?.loraQ?.rank ?? 1);
    const P = hp.method === 'prefix' ? hp.prefixLength : 1;
    const inner: Record<ModuleInputName, number[]> = {
      [MODULE_INPUT.keyDownWeight]: [H, d, rk],
      [MODULE_INPUT.keyDownBias]: [H, rk],
      [MODULE_INPUT.keyUpWeight]: [H, rk, d],
      [MODULE_INPUT.keyUpBias]: [H, d],
      [MODULE_INPUT.valueDownWeight]: [H, d, rv],
      [MODULE_INPUT.valueDownBias]: [H, rv],
      [MODULE_INPUT.valueUpWeight]: [H, rv, D],
      [MODULE_INPUT.valueUpBias]: [D],
      [MODULE_INPUT.loraA]: [r, D],
      [MODULE_INPUT.loraB]: [H * d, r],
      [MODULE_INPUT.loraBias]: [H * d],
      [MODULE_INPUT.loraScale]: [],
      [MODULE_INPUT.loraValueA]: [r, D],
      [MODULE_INPUT.loraValueB]: [KVH * d, r],
      [MODULE_INPUT.prefixKey]: [KVH, P, d],
      [MODULE_INPUT.prefixValue]: [KVH, P, d],
      [MODULE_INPUT.prefixMask]: [],
    } as Record<ModuleInputName, number[]>;
    for (const [name, dims] of Object.entries(inner) as [ModuleInputName, number[]][]) {
      const stacked = name === MODULE_INPUT.loraScale ? [2] : name === MODULE_INPUT.prefixMask ? [2, P] : [2, L, ...dims];
      this.buffers.set(name, { data: new Float32Array(stacked.reduce((a, b) => a * b, 1)), dims: stacked });
    }
    for (const [name, suffix] of tensorSuffixes({ ...hp, tensors: new Map() })) {
      this.fileNames.set(name, Array.from({ length: L }, (_, layer) => `layers.${layer}.${suffix}`));
    }
    const scale = (this.buffers.get(MODULE_INPUT.loraScale) as { data: Float32Array }).data;
    if (hp.method === 'lora') scale[1] = hp.alpha / hp.rank;
    else if (inducer?.loraQ) scale[1] = inducer.loraQ.alpha / inducer.loraQ.rank;
    // Slot 1 attends to every prefix column; slot 0 keeps them masked.
    if (hp.method === 'prefix') (this.buffers.get(MODULE_INPUT.prefixMask) as { data: Float32Array }).data.fill(1, P, 2 * P);
  }

  /** Copies `params` into slot 1. Throws {@link TrainingInputError} for a missing or misshaped tensor. */
  load(params: ReadonlyMap<string, HostTensor>): void {
    for (const [input, names] of this.fileNames) {
      const buffer = this.buffers.get(input) as { data: Float32Array; dims: number[] };
      const perLayer = buffer.data.length / (2 * this.config.numLayers);
      names.forEach((name, layer) => {
        const tensor = params.get(name);
        const expected = this.parameterShapes.get(name) as readonly number[];
        if (!tensor) throw new TrainingInputError(`module parameter ${name} is missing; pass every tensor of parameterShapes`);
        if (tensor.shape.length !== expected.length || tensor.shape.some((dim, i) => dim !== expected[i]) || tensor.data.length !== perLayer) {
          throw new TrainingInputError(`module parameter ${name} has shape ${formatShape(tensor.shape)}, expected ${formatShape(expected)}; pass tensors shaped as parameterShapes`);
        }
        buffer.data.set(tensor.data, (this.config.numLayers + layer) * perLayer);
      });
    }
  }

  /** Cuts the slot-1 part of each stacked gradient into per-layer module-file tensors. */
  unpack(gradients: ReadonlyMap<ModuleInputName, Float32Array>): Map<string, Float32Array> {
    const result = new Map<string, Float32Array>();
    for (const [input, names] of this.fileNames) {
      const gradient = gradients.get(input);
      const perLayer = (this.buffers.get(input) as { data: Float32Array }).data.length / (2 * this.config.numLayers);
      names.forEach((name, layer) => {
        const start = (this.config.numLayers + layer) * perLayer;
        result.set(name, gradient ? gradient.slice(start, start + perLayer) : new Float32Array(perLayer));
      });
    }
    return result;
  }

  feeds(): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, buffer] of this.buffers) feeds[name] = new ort.Tensor('float32', buffer.data, buffer.dims);
    return feeds;
  }
}

/**
 * Forward and backward passes of one module on one frozen model. Create with {@link TrainingSession.create}.
 * Calls share one set of input buffers, so await each `step` or `evaluate` before starting the next.
 */
export class TrainingSession {
  /** Module-file tensor names and shapes being trained (same as moduleTensorShapes). */
  readonly parameterShapes: ReadonlyMap<string, readonly number[]>;
  private readonly buffers: ModuleBuffers;
  private evalSession: Promise<ort.InferenceSession> | null = null;
  private disposed = false;
  private running = false;

  private constructor(
    private readonly config: ModelConfig,
    private readonly weights: ReadonlyMap<string, HostTensor>,
    private readonly hp: MethodSettings,
    private readonly options: TrainingOptions,
    private readonly trainSession: ort.InferenceSession,
    private readonly trainedInputs: readonly ModuleInputName[],
    private readonly weightBytes: number,
  ) {
    this.parameterShapes = moduleTensorShapes(config, hp);
    this.buffers = new ModuleBuffers(config, hp, this.parameterShapes);
  }

  /**
   * Builds the training graph and loads it into ONNX Runtime. Throws {@link TrainingOptionsError}
   * for invalid options and the method's settings error (such as InducerHyperParamsError) for
   * invalid hyper-parameters.
   */
  static async create(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, hp: MethodSettings, options: TrainingOptions): Promise<TrainingSession> {
    validateMethodSettings(hp);
    validateOptions(options);
    let weightBytes = 0;
    for (const tensor of weights.values()) weightBytes += tensor.data.byteLength;
    const { graph, trainedInputs } = buildTrainingGraph(config, weights, hp, { dropout: options.dropout > 0, gradients: true });
    const session = await createOrtSession(graph, weightBytes);
    return new TrainingSession(config, weights, hp, { ...options }, session, trainedInputs, weightBytes);
  }

  /**
   * Runs forward and backward with dropout drawn from `dropoutSeed` (deterministic for equal seeds).
   * The loss is the mean over target tokens; a batch without targets gives loss 0 and zero gradients.
   */
  async step(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>, dropoutSeed: number): Promise<StepResult> {
    return this.exclusive(() => this.runStep(batch, params, dropoutSeed));
  }

  /** Computes plain cross-entropy (no dropout, no label smoothing): the sum of token losses and the token count. */
  async evaluate(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>): Promise<{ lossSum: number; numTargetTokens: number }> {
    return this.exclusive(() => this.runEvaluate(batch, params));
  }

  private async runStep(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>, dropoutSeed: number): Promise<StepResult> {
    const prepared = prepareBatch(this.config, batch);
    this.buffers.load(params);
    if (prepared.numTargets === 0) {
      return { loss: 0, numTargetTokens: 0, gradients: this.buffers.unpack(new Map()) };
    }

    const feeds: Record<string, ort.Tensor> = { ...prepared.feeds, ...this.buffers.feeds() };
    feeds[TRAINING_IO.lossWeights] = new ort.Tensor('float32', new Float32Array(prepared.numTargets).fill(1 / prepared.numTargets), [prepared.numTargets]);
    feeds[TRAINING_IO.labelSmoothing] = new ort.Tensor('float32', Float32Array.of(this.options.labelSmoothing), []);
    if (this.options.dropout > 0) Object.assign(feeds, this.dropoutMasks(prepared, dropoutSeed));

    const fetches = [TRAINING_IO.loss, ...this.trainedInputs.map(gradientOutput)];
    const out = await this.trainSession.run(feeds, fetches);
    const stacked = new Map<ModuleInputName, Float32Array>(this.trainedInputs.map((input) => [input, out[gradientOutput(input)].data as Float32Array]));
    return {
      loss: (out[TRAINING_IO.loss].data as Float32Array)[0],
      numTargetTokens: prepared.numTargets,
      gradients: this.buffers.unpack(stacked),
    };
  }

  private async runEvaluate(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>): Promise<{ lossSum: number; numTargetTokens: number }> {
    const prepared = prepareBatch(this.config, batch);
    this.buffers.load(params);
    if (prepared.numTargets === 0) return { lossSum: 0, numTargetTokens: 0 };

    this.evalSession ??= createOrtSession(buildTrainingGraph(this.config, this.weights, this.hp, { dropout: false, gradients: false }).graph, this.weightBytes);
    const session = await this.evalSession;
    const feeds: Record<string, ort.Tensor> = { ...prepared.feeds, ...this.buffers.feeds() };
    feeds[TRAINING_IO.lossWeights] = new ort.Tensor('float32', new Float32Array(prepared.numTargets).fill(1), [prepared.numTargets]);
    feeds[TRAINING_IO.labelSmoothing] = new ort.Tensor('float32', Float32Array.of(0), []);
    const out = await session.run(feeds, [TRAINING_IO.tokenLosses]);
    // Sum in float64 on the host, so long evaluation sets do not lose precision.
    let lossSum = 0;
    for (const value of out[TRAINING_IO.tokenLosses].data as Float32Array) lossSum += value;
    return { lossSum, numTargetTokens: prepared.numTargets };
  }

  /** Releases both ONNX Runtime sessions. The session cannot run afterwards. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.trainSession.release();
    if (this.evalSession) await (await this.evalSession).release();
  }

  /** Runs `body` unless the session is disposed or another call is still running. */
  private async exclusive<T>(body: () => Promise<T>): Promise<T> {
    if (this.disposed) throw new TrainingInputError('training session was disposed; create a new one with TrainingSession.create');
    if (this.running) throw new TrainingInputError('another step or evaluate call of this training session is still running; await it first');
    this.running = true;
    try {
      return await body();
    } finally {
      this.running = false;
    }
  }

  /** Draws the dropout masks that the method takes: every layer's gate mask, then every layer's LoRA input mask. */
  private dropoutMasks(prepared: PreparedBatch, seed: number): Record<string, ort.Tensor> {
    const { numLayers: L, numHeads: H, hiddenSize: D } = this.config;
    const { batchSize: B, seqLength: N } = prepared;
    const rng = createRng(seed);
    const p = this.options.dropout;
    const kinds = dropoutMasksOf(this.hp);
    const masks: Record<string, ort.Tensor> = {};
    if (kinds.gate) {
      const gate = new Float32Array(L * B * H * N);
      fillDropoutMask(gate, p, rng);
      masks[TRAINING_IO.gateDropoutMask] = new ort.Tensor('float32', gate, [L, B, H, N, 1]);
    }
    if (kinds.loraInput) {
      const lora = new Float32Array(L * B * N * D);
      fillDropoutMask(lora, p, rng);
      masks[TRAINING_IO.loraDropoutMask] = new ort.Tensor('float32', lora, [L, B, N, D]);
    }
    return masks;
  }
}
