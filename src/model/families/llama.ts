/**
 * Llama family (also Mistral and Qwen2): RMSNorm, rotate-half RoPE, grouped-query attention,
 * SwiGLU MLP, separate or tied LM head, optional q/k/v biases. Linear weights are stored
 * `[out, in]` and transposed once when the graph is built.
 * @module
 */
import type { GraphBuilder } from '../../graph/builder.js';
import type { Value } from '../../graph/ir.js';
import type { ModelConfig } from '../config.js';
import type { WeightBank } from '../weight-bank.js';
import { rmsNorm, type DecoderFamily } from './family.js';
import { rotaryTables } from './rope.js';

export function llamaFamily(config: ModelConfig): DecoderFamily {
  const eps = config.normEps;
  const linear = (b: GraphBuilder, w: WeightBank, name: string, x: Value, withBias: boolean): Value => {
    const product = b.matMul(x, w.transposed(`${name}.weight`));
    return withBias ? b.add(product, w.param(`${name}.bias`)) : product;
  };
  const prefix = (i: number): string => `model.layers.${i}`;

  return {
    embed: (b, w, inputIds) => b.gather(w.param('model.embed_tokens.weight'), inputIds),
    attentionNorm: (b, w, i, x) => rmsNorm(b, x, w.param(`${prefix(i)}.input_layernorm.weight`), eps),
    project: (b, w, i, x) => ({
      query: linear(b, w, `${prefix(i)}.self_attn.q_proj`, x, config.attentionBias),
      key: linear(b, w, `${prefix(i)}.self_attn.k_proj`, x, config.attentionBias),
      value: linear(b, w, `${prefix(i)}.self_attn.v_proj`, x, config.attentionBias),
    }),
    rotaryTables: (b, positionIds) => rotaryTables(b, config, positionIds),
    outputProjection: (b, w, i, merged) => linear(b, w, `${prefix(i)}.self_attn.o_proj`, merged, config.outputProjectionBias),
    mlpNorm: (b, w, i, x) => rmsNorm(b, x, w.param(`${prefix(i)}.post_attention_layernorm.weight`), eps),
    mlp: (b, w, i, x) => {
      const gate = linear(b, w, `${prefix(i)}.mlp.gate_proj`, x, config.mlpBias);
      const up = linear(b, w, `${prefix(i)}.mlp.up_proj`, x, config.mlpBias);
      const activated = b.mul(b.mul(gate, b.sigmoid(gate)), up); // silu(gate) * up
      return linear(b, w, `${prefix(i)}.mlp.down_proj`, activated, config.mlpBias);
    },
    finalNorm: (b, w, x) => rmsNorm(b, x, w.param('model.norm.weight'), eps),
    headWeight: (w) => (config.tieWordEmbeddings || !w.has('lm_head.weight') ? w.param('model.embed_tokens.weight') : w.param('lm_head.weight')),
  };
}
