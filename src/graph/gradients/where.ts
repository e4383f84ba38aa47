/** Gradient of Where (`c ? x : y`): `g` where the condition picks the branch and 0 elsewhere, summed over broadcast axes. The condition gets none. */
import { reduceToShape, requireInput, scalar, type GradientModule } from './rule.js';

export const whereGradient: GradientModule = {
  opType: 'Where',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const condition = requireInput(ctx, 0);
    const whenTrue = requireInput(ctx, 1);
    const whenFalse = requireInput(ctx, 2);
    const zero = scalar(b, 0);
    return [null, reduceToShape(b, b.where(condition, grad, zero), whenTrue), reduceToShape(b, b.where(condition, zero, grad), whenFalse)];
  },
};
