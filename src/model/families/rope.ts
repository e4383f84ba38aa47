/**
 * Rotary position embeddings in the rotate-half layout used by Hugging Face Llama checkpoints:
 * dims i and i + d/2 form a pair rotated by angle position * inv_freq[i].
 * @module
 */
import type { GraphBuilder } from '../../graph/builder.js';
import type { Value } from '../../graph/ir.js';
import type { ModelConfig } from '../config.js';

/** Inverse frequencies [d/2], including `rope_scaling` (linear, llama3) as transformers computes them. */
export function inverseFrequencies(config: ModelConfig): Float32Array {
  const d = config.headDim;
  const out = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) out[i] = 1 / config.ropeTheta ** ((2 * i) / d);
  const scaling = config.ropeScaling;
  if (scaling?.type === 'linear') {
    for (let i = 0; i < out.length; i++) out[i] /= scaling.factor;
  } else if (scaling?.type === 'llama3') {
    const lowWavelength = scaling.originalMaxPositions / scaling.lowFreqFactor;
    const highWavelength = scaling.originalMaxPositions / scaling.highFreqFactor;
    for (let i = 0; i < out.length; i++) {
      const wavelength = (2 * Math.PI) / out[i];
      if (wavelength > lowWavelength) out[i] /= scaling.factor;
      else if (wavelength >= highWavelength) {
        const smooth = (scaling.originalMaxPositions / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
        out[i] = (1 - smooth) * (out[i] / scaling.factor) + smooth * out[i];
      }
    }
  }
  return out;
}

/** cos and sin tables [B, 1, N, d] for int64 positions [B, N]. */
export function rotaryTables(b: GraphBuilder, config: ModelConfig, positionIds: Value): { cos: Value; sin: Value } {
  const half = config.headDim / 2;
  const positions = b.unsqueeze(b.cast(positionIds, 'float32'), [-1]); // [B, N, 1]
  const angles = b.mul(positions, b.constFloat(inverseFrequencies(config), [half])); // [B, N, d/2]
  const full = b.unsqueeze(b.concat([angles, angles], -1), [1]); // [B, 1, N, d]
  return { cos: b.cos(full), sin: b.sin(full) };
}

/** x * cos + rotate_half(x) * sin for x [B, heads, N, d], where rotate_half(x) = [-x2, x1]. */
export function applyRotary(b: GraphBuilder, x: Value, tables: { cos: Value; sin: Value }, headDim: number): Value {
  const half = headDim / 2;
  const first = b.slice(x, -1, 0, half);
  const second = b.slice(x, -1, half, headDim);
  const rotated = b.concat([b.neg(second), first], -1);
  return b.add(b.mul(x, tables.cos), b.mul(rotated, tables.sin));
}
