/**
 * Gradient of ReduceMax: the upstream gradient goes to the positions equal to the maximum. Ties
 * split it evenly, so the gradients over a tied group sum to the upstream gradient (the same
 * choice as averaging subgradients). The axes get none.
 */
import { reducedGradient } from './reduce-common.js';
import { requireInput, type GradientModule } from './rule.js';

export const reduceMaxGradient: GradientModule = {
  opType: 'ReduceMax',
  rule: (ctx) => {
    const { b } = ctx;
    const x = requireInput(ctx, 0);
    const { keptOutput, expanded } = reducedGradient(ctx);
    const axes = ctx.constantInts(1);
    const mask = b.cast(b.equal(x, keptOutput), 'float32'); // 1 at each maximum
    const tieCount = b.reduceSum(mask, axes, true);
    return [b.div(b.mul(expanded, mask), tieCount), null];
  },
};
