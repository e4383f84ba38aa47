/**
 * The inducer-tuning attention hook as graph code. For query q of head h (row vectors):
 *   u = tanh(q A_k + a_k),  p_k = q + u B_k + b_k,  s = <q, p_k> / sqrt(d),
 *   lambda = sigmoid(s - LSE_j(S_j))            (S: the masked, scaled attention logits of q),
 *   delta = sum_h lambda_h tanh(q A_v + a_v) B_v + b_v   (added after the output projection).
 * With LoRA on the query, q is first corrected by scale * ((x L_A^T) L_B^T + l_b).
 * Parameters come per batch row (already gathered by slot), so one batch mixes modules.
 * @module
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/ir.js';

/** One layer's module parameters for every batch row. */
export interface LayerModuleParams {
  /** [B, H, d, key_rank] */
  readonly keyDownWeight: Value;
  /** [B, H, key_rank] */
  readonly keyDownBias: Value;
  /** [B, H, key_rank, d] */
  readonly keyUpWeight: Value;
  /** [B, H, d] */
  readonly keyUpBias: Value;
  /** [B, H, d, value_rank] */
  readonly valueDownWeight: Value;
  /** [B, H, value_rank] */
  readonly valueDownBias: Value;
  /** [B, H, value_rank, D] */
  readonly valueUpWeight: Value;
  /** [B, D] */
  readonly valueUpBias: Value;
  /** [B, lora_rank, D] */
  readonly loraA: Value;
  /** [B, Dq, lora_rank] */
  readonly loraB: Value;
  /** [B, Dq] */
  readonly loraBias: Value;
  /** [B] */
  readonly loraScale: Value;
}

/**
 * Computes the LoRA correction of the query projection, `scale * ((x L_A^T) L_B^T + l_b)`, [B, N, Dq].
 * In training, `inputDropoutMask` ([B, N, D], entries 0 or 1/(1-p)) multiplies x before L_A, so
 * dropout reaches the LoRA path only and not the bias.
 */
export function loraQueryDelta(b: GraphBuilder, x: Value, p: LayerModuleParams, inputDropoutMask?: Value): Value {
  const input = inputDropoutMask ? b.mul(x, inputDropoutMask) : x;
  const down = b.matMul(input, b.transpose(p.loraA, [0, 2, 1])); // [B, N, r]
  const up = b.matMul(down, b.transpose(p.loraB, [0, 2, 1])); // [B, N, Dq]
  const withBias = b.add(up, b.unsqueeze(p.loraBias, [1])); // [B, N, Dq]
  return b.mul(withBias, b.reshape(p.loraScale, [-1, 1, 1])); // [B, 1, 1] scale per row
}

/**
 * Computes the gate lambda = sigmoid(<q, p_k>/sqrt(d) - lse), [B, H, N, 1].
 * `q` is [B, H, N, d] exactly as the attention logits use it. `lse` is [B, H, N, 1], the
 * log-sum-exp of the masked, scaled logits of each query row.
 */
export function inducerGate(b: GraphBuilder, q: Value, lse: Value, p: LayerModuleParams, headDim: number): Value {
  const hidden = b.tanh(b.add(b.matMul(q, p.keyDownWeight), b.unsqueeze(p.keyDownBias, [2]))); // [B, H, N, rk]
  const inducerKey = b.add(b.add(q, b.matMul(hidden, p.keyUpWeight)), b.unsqueeze(p.keyUpBias, [2])); // [B, H, N, d]
  const logit = b.mul(b.reduceSum(b.mul(q, inducerKey), [-1]), b.constFloat([1 / Math.sqrt(headDim)], [])); // [B, H, N, 1]
  return b.sigmoid(b.sub(logit, lse));
}

/** Computes the value path: the sum over heads of lambda * tanh(q A_v + a_v) B_v, plus b_v, [B, N, D]. */
export function inducerValue(b: GraphBuilder, q: Value, gate: Value, p: LayerModuleParams): Value {
  const hidden = b.tanh(b.add(b.matMul(q, p.valueDownWeight), b.unsqueeze(p.valueDownBias, [2]))); // [B, H, N, rv]
  const gated = b.mul(hidden, gate); // [B, H, N, rv]
  const merged = b.reshape(b.transpose(gated, [0, 2, 1, 3]), [0, 0, -1]); // [B, N, H*rv]
  const up = b.reshape(p.valueUpWeight, [0, -1, p.valueUpWeight.shape[3] as number]); // [B, H*rv, D]
  return b.add(b.matMul(merged, up), b.unsqueeze(p.valueUpBias, [1])); // [B, N, D]
}
