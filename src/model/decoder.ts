/**
 * The decoder skeleton shared by every family: embeddings, L blocks of
 * `x + attention(norm(x))` then `x + mlp(norm(x))`, final norm, LM head. Attention carries the
 * hooks of all three tuning methods (inducer-tuning, prefix-tuning, LoRA on query and value).
 * Module parameters are graph inputs stacked over slots, and `slot_ids` picks each row's module.
 * A slot holds one module, and the other methods' inputs of that slot are zero, which makes their
 * hooks no-ops. One graph serves prefill (past = 0) and cached decoding.
 * @module
 */
import { GraphBuilder } from '../graph/builder.js';
import type { Graph, Value } from '../graph/ir.js';
import { inducerGate, inducerValue, loraQueryDelta, type LayerModuleParams } from '../tuning/inducer-graph.js';
import { loraDelta } from '../tuning/lora.js';
import { prefixScores, type LayerPrefix } from '../tuning/prefix.js';
import type { ModelConfig } from './config.js';
import type { DecoderFamily } from './families/family.js';
import { gpt2Family } from './families/gpt2.js';
import { llamaFamily } from './families/llama.js';
import { applyRotary } from './families/rope.js';
import { DIM, INPUT, MODULE_INPUT, OUTPUT_LOGITS, pastKey, pastValue, presentKey, presentValue } from './graph-io.js';
import type { HostTensor } from './tensor.js';
import { WeightBank } from './weight-bank.js';

/** Logit given to masked keys: finite, so a row with every key masked still gives a finite softmax. */
export const MASKED_LOGIT = -1e9;

/**
 * Logit given to masked prefix columns. It lies 1e9 below {@link MASKED_LOGIT}, so exp of the
 * difference is 0 in float32 and a row with every token masked (padding) gives masked prefix
 * columns weight 0 too, as a graph without prefix columns would.
 */
export const MASKED_PREFIX_LOGIT = 2 * MASKED_LOGIT;

export function familyOf(config: ModelConfig): DecoderFamily {
  return config.family === 'gpt2' ? gpt2Family(config) : llamaFamily(config);
}

/** Module inputs as declared: each [S, L, ...], except loraScale [S] and prefixMask [S, P]. */
type StackedModule = Record<keyof typeof MODULE_INPUT, Value>;

function declareModuleInputs(b: GraphBuilder, config: ModelConfig): StackedModule {
  const { numLayers: L, numHeads: H, numKeyValueHeads: KVH, headDim: d, hiddenSize: D } = config;
  const Dq = H * d;
  const S = DIM.slots;
  const shapes: Record<keyof typeof MODULE_INPUT, (string | number)[]> = {
    keyDownWeight: [S, L, H, d, DIM.keyRank],
    keyDownBias: [S, L, H, DIM.keyRank],
    keyUpWeight: [S, L, H, DIM.keyRank, d],
    keyUpBias: [S, L, H, d],
    valueDownWeight: [S, L, H, d, DIM.valueRank],
    valueDownBias: [S, L, H, DIM.valueRank],
    valueUpWeight: [S, L, H, DIM.valueRank, D],
    valueUpBias: [S, L, D],
    loraA: [S, L, DIM.loraRank, D],
    loraB: [S, L, Dq, DIM.loraRank],
    loraBias: [S, L, Dq],
    loraScale: [S],
    loraValueA: [S, L, DIM.loraRank, D],
    loraValueB: [S, L, KVH * d, DIM.loraRank],
    prefixKey: [S, L, KVH, DIM.prefixLength, d],
    prefixValue: [S, L, KVH, DIM.prefixLength, d],
    prefixMask: [S, DIM.prefixLength],
  };
  return Object.fromEntries(
    (Object.keys(MODULE_INPUT) as (keyof typeof MODULE_INPUT)[]).map((key) => [key, b.input(MODULE_INPUT[key], 'float32', shapes[key])]),
  ) as StackedModule;
}

/** Module inputs stacked over layers; loraScale [S] and prefixMask [S, P] are per slot only. */
type LayerStackedKey = Exclude<keyof typeof MODULE_INPUT, 'loraScale' | 'prefixMask'>;

/**
 * The module inputs prepared for one gather per layer: each layer-stacked input viewed as
 * [S*L, ...], where row s*L + l is layer l of slot s, and the per-slot inputs gathered for the batch.
 */
interface ModuleRows {
  readonly flat: Record<LayerStackedKey, Value>;
  /** [B]: slot_ids * L, the flat row of layer 0 of each batch row's slot. */
  readonly firstRow: Value;
  /** [B] */
  readonly loraScale: Value;
  /** [B, P] */
  readonly prefixMask: Value;
}

/**
 * Reshapes `[S, L, ...inner]` to `[S*L, ...inner]`. The inner dims include symbolic ranks, so the
 * target shape is built at run time from the input's shape. In ONNX Runtime 1.31.1's profile these
 * Reshapes take under 1 ms per GPT-2 small step, far less than copying the slot table would, so the
 * per-layer gathers are the only copy of module parameters.
 */
function mergeSlotsAndLayers(b: GraphBuilder, stacked: Value): Value {
  const inner = stacked.shape.slice(2);
  const innerShape = b.emit('Shape', [stacked], [{ dtype: 'int64', shape: [inner.length] }], { start: { kind: 'int', value: 2 } })[0];
  const target = b.concat([b.constInt([-1]), innerShape], 0);
  return b.emit('Reshape', [stacked, target], [{ dtype: stacked.dtype, shape: [`${DIM.slots}*layers`, ...inner] }])[0];
}

function prepareModuleRows(b: GraphBuilder, stacked: StackedModule, slotIds: Value, numLayers: number): ModuleRows {
  const { loraScale, prefixMask, ...layerStacked } = stacked;
  const flat = Object.fromEntries(Object.entries(layerStacked).map(([key, value]) => [key, mergeSlotsAndLayers(b, value)])) as Record<LayerStackedKey, Value>;
  return {
    flat,
    firstRow: b.mul(slotIds, b.constInt([numLayers], [])),
    loraScale: b.gather(loraScale, slotIds, 0),
    prefixMask: b.gather(prefixMask, slotIds, 0),
  };
}

/** One layer's parameters of every method for every batch row. */
interface LayerParams {
  readonly inducer: LayerModuleParams;
  /** [B, r, D] */
  readonly loraValueA: Value;
  /** [B, KVH*d, r] */
  readonly loraValueB: Value;
  readonly prefix: LayerPrefix;
}

/** Gathers layer `layer` of each batch row's slot: one copy of that layer's parameters per row. */
function layerParams(b: GraphBuilder, rows: ModuleRows, layer: number): LayerParams {
  const index = b.add(rows.firstRow, b.constInt([layer], [])); // [B]
  const pick = (key: LayerStackedKey): Value => b.gather(rows.flat[key], index, 0);
  return {
    inducer: {
      keyDownWeight: pick('keyDownWeight'),
      keyDownBias: pick('keyDownBias'),
      keyUpWeight: pick('keyUpWeight'),
      keyUpBias: pick('keyUpBias'),
      valueDownWeight: pick('valueDownWeight'),
      valueDownBias: pick('valueDownBias'),
      valueUpWeight: pick('valueUpWeight'),
      valueUpBias: pick('valueUpBias'),
      loraA: pick('loraA'),
      loraB: pick('loraB'),
      loraBias: pick('loraBias'),
      loraScale: rows.loraScale,
    },
    loraValueA: pick('loraValueA'),
    loraValueB: pick('loraValueB'),
    prefix: { key: pick('prefixKey'), value: pick('prefixValue'), mask: rows.prefixMask },
  };
}

/**
 * Boolean mask [B, 1, N, M]: key j is visible to new token i when j <= past + i (causal) and
 * attention_mask[b, j] is 1.
 */
function visibilityMask(b: GraphBuilder, inputIds: Value, attentionMask: Value): Value {
  const total = b.squeeze(b.shapeOf(attentionMask, 1), [0]);
  const seq = b.squeeze(b.shapeOf(inputIds, 1), [0]);
  const past = b.sub(total, seq);
  const one = b.constInt([1], []);
  const keyIndex = b.range(b.constInt([0], []), total, one, DIM.total); // [M]
  const queryIndex = b.range(past, total, one, DIM.seq); // [N]
  const causal = b.lessOrEqual(b.unsqueeze(keyIndex, [0]), b.unsqueeze(queryIndex, [1])); // [N, M]
  const present = b.unsqueeze(b.equal(attentionMask, b.constInt([1], [])), [1, 2]); // [B, 1, 1, M]
  return b.and(causal, present); // [B, 1, N, M]
}

/**
 * Dropout masks for training, each stacked over layers and holding 0 (dropped) or 1/(1-p) (kept).
 * The serving graph has none.
 */
export interface DecoderDropoutMasks {
  /** [L, B, H, N, 1]: multiplies the inducer gate lambda of each layer before the value path uses it. */
  readonly gate?: Value;
  /** [L, B, N, D]: multiplies the LoRA input X of each layer, for the query and the value update alike. */
  readonly loraInput?: Value;
}

interface AttentionContext {
  readonly config: ModelConfig;
  readonly family: DecoderFamily;
  readonly weights: WeightBank;
  readonly visible: Value;
  readonly rotary: { cos: Value; sin: Value } | null;
  readonly dropout: DecoderDropoutMasks;
}

/** Picks layer `layer` of a mask stacked over layers, or returns undefined when there is no mask. */
function layerMask(b: GraphBuilder, stacked: Value | undefined, layer: number): Value | undefined {
  return stacked ? b.gather(stacked, b.constInt([layer], []), 0) : undefined;
}

/**
 * One attention sub-layer with the hooks of every method; returns its output [B, N, D] (before the
 * residual). LoRA corrects the query and value projections before rotation. The prefix columns
 * join the softmax but not the present KV outputs, so the cache contains real tokens only.
 */
function attention(b: GraphBuilder, ctx: AttentionContext, layer: number, x: Value, params: LayerParams): Value {
  const { config, family, weights } = ctx;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: d } = config;
  const module = params.inducer;
  const groups = H / KVH;
  const projections = family.project(b, weights, layer, x);
  const loraInputMask = layerMask(b, ctx.dropout.loraInput, layer); // [B, N, D] or undefined
  const query = b.add(projections.query, loraQueryDelta(b, x, module, loraInputMask)); // [B, N, H*d]
  const valueDelta = loraDelta(b, x, params.loraValueA, params.loraValueB, module.loraScale, loraInputMask); // [B, N, KVH*d]
  const value = b.add(projections.value, valueDelta);

  let q = b.transpose(b.reshape(query, [0, 0, H, d]), [0, 2, 1, 3]); // [B, H, N, d]
  let k = b.transpose(b.reshape(projections.key, [0, 0, KVH, d]), [0, 2, 1, 3]); // [B, KVH, N, d]
  const v = b.transpose(b.reshape(value, [0, 0, KVH, d]), [0, 2, 1, 3]); // [B, KVH, N, d]
  if (ctx.rotary) {
    q = applyRotary(b, q, ctx.rotary, d);
    k = applyRotary(b, k, ctx.rotary, d);
  }

  const pastK = b.input(pastKey(layer), 'float32', [DIM.batch, KVH, DIM.past, d]);
  const pastV = b.input(pastValue(layer), 'float32', [DIM.batch, KVH, DIM.past, d]);
  const keys = b.concat([pastK, k], 2, DIM.total); // [B, KVH, M, d]
  const values = b.concat([pastV, v], 2, DIM.total); // [B, KVH, M, d]
  b.output(keys, presentKey(layer));
  b.output(values, presentValue(layer));

  // Grouped-query attention: query heads are grouped under their key/value head, [B, KVH, G, N, d].
  const grouped = groups === 1 ? q : b.reshape(q, [0, KVH, groups, -1, d]);
  const keysT = b.transpose(keys, [0, 1, 3, 2]); // [B, KVH, d, M]
  const keysForGroups = groups === 1 ? keysT : b.unsqueeze(keysT, [2]); // [B, KVH, 1, d, M]
  const valuesForGroups = groups === 1 ? values : b.unsqueeze(values, [2]); // [B, KVH, 1, M, d]
  const visible = groups === 1 ? ctx.visible : b.unsqueeze(ctx.visible, [1]); // [B, 1, (1,) N, M]

  const scale = 1 / Math.sqrt(d);
  const scores = b.mul(b.matMul(grouped, keysForGroups), b.constFloat([scale], [])); // [B, KVH, (G,) N, M]
  const visibleScores = b.where(visible, scores, b.constFloat([MASKED_LOGIT], []));

  // Prefix columns go first: one softmax over [prefix | cached and new tokens], P + M columns.
  const prefixLogits = prefixScores(b, grouped, params.prefix, groups !== 1, scale, MASKED_PREFIX_LOGIT); // [B, KVH, (G,) N, P]
  const masked = b.concat([prefixLogits, visibleScores], -1, DIM.attended); // [B, KVH, (G,) N, P+M]
  const prefixValues = groups === 1 ? params.prefix.value : b.unsqueeze(params.prefix.value, [2]); // [B, KVH, (1,) P, d]
  const attendedValues = b.concat([prefixValues, valuesForGroups], -2, DIM.attended); // [B, KVH, (1,) P+M, d]
  const rowMax = b.reduceMax(masked, [-1]);
  const exps = b.exp(b.sub(masked, rowMax));
  const rowSum = b.reduceSum(exps, [-1]);
  const probabilities = b.div(exps, rowSum);
  const logSumExp = b.add(rowMax, b.log(rowSum)); // [B, KVH, (G,) N, 1]

  const context = b.matMul(probabilities, attendedValues); // [B, KVH, (G,) N, d]
  const perHead = groups === 1 ? context : b.reshape(context, [0, H, -1, d]); // [B, H, N, d]
  const merged = b.reshape(b.transpose(perHead, [0, 2, 1, 3]), [0, 0, H * d]); // [B, N, H*d]
  const output = family.outputProjection(b, weights, layer, merged); // [B, N, D]

  const lse = groups === 1 ? logSumExp : b.reshape(logSumExp, [0, H, -1, 1]); // [B, H, N, 1]
  const gate = inducerGate(b, q, lse, module, d); // [B, H, N, 1]
  const gateMask = layerMask(b, ctx.dropout.gate, layer); // [B, H, N, 1] or undefined
  const droppedGate = gateMask ? b.mul(gate, gateMask) : gate;
  return b.add(output, inducerValue(b, q, droppedGate, module));
}

/**
 * Adds the decoder to `b` (inputs, weights as initializers, present KV outputs) and returns the
 * logits value [logit_rows, V] without declaring it as an output, so a caller can build a loss on it.
 * A training graph passes `dropout` masks that the caller declared as inputs of `b`.
 */
export function addDecoder(b: GraphBuilder, config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, dropout: DecoderDropoutMasks = {}): Value {
  const family = familyOf(config);
  const bank = new WeightBank(b, weights);

  const inputIds = b.input(INPUT.inputIds, 'int64', [DIM.batch, DIM.seq]);
  const positionIds = b.input(INPUT.positionIds, 'int64', [DIM.batch, DIM.seq]);
  const attentionMask = b.input(INPUT.attentionMask, 'int64', [DIM.batch, DIM.total]);
  const logitsIndices = b.input(INPUT.logitsIndices, 'int64', [DIM.logitRows]);
  const slotIds = b.input(INPUT.slotIds, 'int64', [DIM.batch]);
  const moduleRows = prepareModuleRows(b, declareModuleInputs(b, config), slotIds, config.numLayers);

  const visible = visibilityMask(b, inputIds, attentionMask);
  const rotary = family.rotaryTables(b, positionIds);
  const ctx: AttentionContext = { config, family, weights: bank, visible, rotary, dropout };

  let hidden = family.embed(b, bank, inputIds, positionIds); // [B, N, D]
  for (let layer = 0; layer < config.numLayers; layer++) {
    hidden = b.within(`layer${layer}`, () => {
      const params = layerParams(b, moduleRows, layer);
      const attended = b.add(hidden, attention(b, ctx, layer, family.attentionNorm(b, bank, layer, hidden), params));
      return b.add(attended, family.mlp(b, bank, layer, family.mlpNorm(b, bank, layer, attended)));
    });
  }
  const normalized = family.finalNorm(b, bank, hidden);
  const rows = b.gather(b.reshape(normalized, [-1, config.hiddenSize]), logitsIndices, 0); // [R, D]
  return b.gemm(rows, family.headWeight(bank), { transB: true }); // [R, V]
}

/** Builds the decoder graph for a checkpoint. Weights become initializers (not copied, except transposes). */
export function buildDecoderGraph(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>): Graph {
  const b = new GraphBuilder(`${config.modelType}-decoder`);
  b.output(addDecoder(b, config, weights), OUTPUT_LOGITS);
  return b.build();
}
