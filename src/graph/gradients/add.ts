/** Gradient of Add: the upstream gradient, summed over each input's broadcast axes. */
import { reduceToShape, requireInput, type GradientModule } from './rule.js';

export const addGradient: GradientModule = {
  opType: 'Add',
  rule: (ctx) => [reduceToShape(ctx.b, ctx.grad, requireInput(ctx, 0)), reduceToShape(ctx.b, ctx.grad, requireInput(ctx, 1))],
};
