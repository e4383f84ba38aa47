/** Gradient of Cos: `-g * sin x`. */
import { requireInput, type GradientModule } from './rule.js';

export const cosGradient: GradientModule = {
  opType: 'Cos',
  rule: (ctx) => [ctx.b.neg(ctx.b.mul(ctx.grad, ctx.b.sin(requireInput(ctx, 0))))],
};
