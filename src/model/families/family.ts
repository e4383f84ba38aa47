/**
 * The contract between the shared decoder skeleton and a model family (GPT-2, Llama).
 * @module
 */
import type { GraphBuilder } from '../../graph/builder.js';
import type { Value } from '../../graph/ir.js';
import type { ModelConfig } from '../config.js';
import type { WeightBank } from '../weight-bank.js';

/** Query, key and value projections of one layer, each [B, N, heads * d]. */
export interface Projections {
  readonly query: Value;
  readonly key: Value;
  readonly value: Value;
}

/** Graph code of one family; every method builds nodes for one layer or one stage. */
export interface DecoderFamily {
  /** Token (and learned position) embeddings, [B, N, D]. */
  embed(b: GraphBuilder, w: WeightBank, inputIds: Value, positionIds: Value): Value;
  /** Normalisation before attention (`ln_1` / `input_layernorm`). */
  attentionNorm(b: GraphBuilder, w: WeightBank, layer: number, x: Value): Value;
  project(b: GraphBuilder, w: WeightBank, layer: number, x: Value): Projections;
  /** Rotary embedding tables for the given positions ([B, 1, N, d] cos and sin), or null. */
  rotaryTables(b: GraphBuilder, positionIds: Value): { cos: Value; sin: Value } | null;
  /** Output projection of the merged heads, [B, N, D] (bias included). */
  outputProjection(b: GraphBuilder, w: WeightBank, layer: number, merged: Value): Value;
  mlpNorm(b: GraphBuilder, w: WeightBank, layer: number, x: Value): Value;
  mlp(b: GraphBuilder, w: WeightBank, layer: number, x: Value): Value;
  finalNorm(b: GraphBuilder, w: WeightBank, x: Value): Value;
  /** LM head weight as [V, D]. */
  headWeight(w: WeightBank): Value;
}

export type FamilyFactory = (config: ModelConfig) => DecoderFamily;

/** LayerNorm over the last axis from primitive ops (ONNX Runtime fuses the pattern). */
export function layerNorm(b: GraphBuilder, x: Value, weight: Value, bias: Value, eps: number): Value {
  const mean = b.reduceMean(x, [-1]);
  const centered = b.sub(x, mean);
  const variance = b.reduceMean(b.pow(centered, b.constFloat([2], [])), [-1]);
  const normalized = b.div(centered, b.sqrt(b.add(variance, b.constFloat([eps], []))));
  return b.add(b.mul(normalized, weight), bias);
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight. */
export function rmsNorm(b: GraphBuilder, x: Value, weight: Value, eps: number): Value {
  const meanSquare = b.reduceMean(b.pow(x, b.constFloat([2], [])), [-1]);
  return b.mul(b.div(x, b.sqrt(b.add(meanSquare, b.constFloat([eps], [])))), weight);
}
