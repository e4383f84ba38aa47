/** Gradient of Sub (`a - b`): `g` for `a` and `-g` for `b`, each summed over its broadcast axes. */
import { reduceToShape, requireInput, type GradientModule } from './rule.js';

export const subGradient: GradientModule = {
  opType: 'Sub',
  rule: (ctx) => {
    const { b, grad } = ctx;
    return [reduceToShape(b, grad, requireInput(ctx, 0)), reduceToShape(b, b.neg(grad), requireInput(ctx, 1))];
  },
};
