/**
 * Gradient of MatMul (`y = a x b` on `[..., n, k] x [..., k, m]`): `g x b^T` for `a` and
 * `a^T x g` for `b`, where `^T` swaps the last two dims; each is then summed over the batch
 * dims that were broadcast.
 */
import type { GraphBuilder } from '../builder.js';
import type { Value } from '../ir.js';
import { reduceToShape, requireInput, type GradientModule } from './rule.js';

function swapLastTwo(b: GraphBuilder, x: Value): Value {
  const rank = x.shape.length;
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return b.transpose(x, perm);
}

export const matMulGradient: GradientModule = {
  opType: 'MatMul',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const left = requireInput(ctx, 0);
    const right = requireInput(ctx, 1);
    const gradLeft = b.matMul(grad, swapLastTwo(b, right)); // [..., n, k]
    const gradRight = b.matMul(swapLastTwo(b, left), grad); // [..., k, m]
    return [reduceToShape(b, gradLeft, left), reduceToShape(b, gradRight, right)];
  },
};
