/** Gradient of Squeeze: the upstream gradient reshaped back to the input's shape. The axes get none. */
import { requireInput, reshapeLike, type GradientModule } from './rule.js';

export const squeezeGradient: GradientModule = {
  opType: 'Squeeze',
  rule: (ctx) => [reshapeLike(ctx.b, ctx.grad, requireInput(ctx, 0)), null],
};
