/** Gradient of Mul (`a * b`): `g * b` for `a` and `g * a` for `b`, each summed over its broadcast axes. */
import { reduceToShape, requireInput, type GradientModule } from './rule.js';

export const mulGradient: GradientModule = {
  opType: 'Mul',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const left = requireInput(ctx, 0);
    const right = requireInput(ctx, 1);
    return [reduceToShape(b, b.mul(grad, right), left), reduceToShape(b, b.mul(grad, left), right)];
  },
};
