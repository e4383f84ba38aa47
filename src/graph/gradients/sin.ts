/** Gradient of Sin: `g * cos x`. */
import { requireInput, type GradientModule } from './rule.js';

export const sinGradient: GradientModule = {
  opType: 'Sin',
  rule: (ctx) => [ctx.b.mul(ctx.grad, ctx.b.cos(requireInput(ctx, 0)))],
};
