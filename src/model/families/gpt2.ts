/**
 * GPT-2: learned positions, pre-LayerNorm blocks, fused `c_attn` Conv1D (weights stored
 * `[in, out]`), `gelu_new` MLP, LM head tied to `wte` unless the config unties it.
 * @module
 */
import type { GraphBuilder } from '../../graph/builder.js';
import type { Value } from '../../graph/ir.js';
import type { ModelConfig } from '../config.js';
import type { WeightBank } from '../weight-bank.js';
import { layerNorm, type DecoderFamily } from './family.js';

/** gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
function geluNew(b: GraphBuilder, x: Value): Value {
  const cubic = b.mul(b.pow(x, b.constFloat([3], [])), b.constFloat([0.044715], []));
  const inner = b.mul(b.add(x, cubic), b.constFloat([Math.sqrt(2 / Math.PI)], []));
  return b.mul(b.mul(x, b.constFloat([0.5], [])), b.add(b.tanh(inner), b.constFloat([1], [])));
}

export function gpt2Family(config: ModelConfig): DecoderFamily {
  const D = config.hiddenSize;
  const eps = config.normEps;
  const conv1d = (b: GraphBuilder, w: WeightBank, name: string, x: Value): Value =>
    b.add(b.matMul(x, w.param(`${name}.weight`)), w.param(`${name}.bias`));

  return {
    embed: (b, w, inputIds, positionIds) => b.add(b.gather(w.param('wte.weight'), inputIds), b.gather(w.param('wpe.weight'), positionIds)),
    attentionNorm: (b, w, i, x) => layerNorm(b, x, w.param(`h.${i}.ln_1.weight`), w.param(`h.${i}.ln_1.bias`), eps),
    project: (b, w, i, x) => {
      const qkv = conv1d(b, w, `h.${i}.attn.c_attn`, x); // [B, N, 3D]
      return {
        query: b.slice(qkv, -1, 0, D),
        key: b.slice(qkv, -1, D, 2 * D),
        value: b.slice(qkv, -1, 2 * D, 3 * D),
      };
    },
    rotaryTables: () => null,
    outputProjection: (b, w, i, merged) => conv1d(b, w, `h.${i}.attn.c_proj`, merged),
    mlpNorm: (b, w, i, x) => layerNorm(b, x, w.param(`h.${i}.ln_2.weight`), w.param(`h.${i}.ln_2.bias`), eps),
    mlp: (b, w, i, x) => conv1d(b, w, `h.${i}.mlp.c_proj`, geluNew(b, conv1d(b, w, `h.${i}.mlp.c_fc`, x))),
    finalNorm: (b, w, x) => layerNorm(b, x, w.param('ln_f.weight'), w.param('ln_f.bias'), eps),
    headWeight: (w) => (config.tieWordEmbeddings || !w.has('lm_head.weight') ? w.param('wte.weight') : w.param('lm_head.weight')),
  };
}
