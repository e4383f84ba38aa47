/**
 * Turns checkpoint tensors into graph initializers on first use, optionally transposed so that
 * `[out, in]` linear weights become `[in, out]` MatMul operands.
 * @module
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/ir.js';
import { formatShape, type HostTensor } from './tensor.js';

export class MissingWeightError extends Error {
  override readonly name = 'MissingWeightError';
}

function transpose2d(t: HostTensor): Float32Array {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  const src = t.data;
  const block = 64;
  for (let r0 = 0; r0 < rows; r0 += block) {
    for (let c0 = 0; c0 < cols; c0 += block) {
      const rEnd = Math.min(rows, r0 + block);
      const cEnd = Math.min(cols, c0 + block);
      for (let r = r0; r < rEnd; r++) for (let c = c0; c < cEnd; c++) out[c * rows + r] = src[r * cols + c];
    }
  }
  return out;
}

export class WeightBank {
  private readonly created = new Map<string, Value>();

  constructor(
    private readonly b: GraphBuilder,
    private readonly weights: ReadonlyMap<string, HostTensor>,
  ) {}

  has(name: string): boolean {
    return this.weights.has(name);
  }

  private tensor(name: string): HostTensor {
    const t = this.weights.get(name);
    if (!t) throw new MissingWeightError(`checkpoint has no tensor "${name}"`);
    return t;
  }

  /** Returns the tensor as stored. */
  param(name: string): Value {
    const cached = this.created.get(name);
    if (cached) return cached;
    const t = this.tensor(name);
    const v = this.b.initializer(name, 'float32', t.shape, t.data);
    this.created.set(name, v);
    return v;
  }

  /** Returns a 2-D `[out, in]` tensor transposed to `[in, out]`. */
  transposed(name: string): Value {
    const key = `${name}:T`;
    const cached = this.created.get(key);
    if (cached) return cached;
    const t = this.tensor(name);
    if (t.shape.length !== 2) throw new MissingWeightError(`tensor "${name}" must be 2-D to transpose, got ${formatShape(t.shape)}`);
    const v = this.b.initializer(`${name}.T`, 'float32', [t.shape[1], t.shape[0]], transpose2d(t));
    this.created.set(key, v);
    return v;
  }
}
