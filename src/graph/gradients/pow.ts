/**
 * Gradient of Pow (`x ^ p`) with respect to the base: `g * p * x ^ (p - 1)`. The exponent gets
 * no gradient, so differentiating through a computed exponent raises an error in `differentiate`.
 */
import { reduceToShape, requireInput, scalar, type GradientModule } from './rule.js';

export const powGradient: GradientModule = {
  opType: 'Pow',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const base = requireInput(ctx, 0);
    const exponent = requireInput(ctx, 1);
    const slope = b.mul(exponent, b.pow(base, b.sub(exponent, scalar(b, 1))));
    return [reduceToShape(b, b.mul(grad, slope), base), null];
  },
};
