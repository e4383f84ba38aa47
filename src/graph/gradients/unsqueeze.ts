/** Gradient of Unsqueeze: the upstream gradient reshaped back to the input's shape. The axes get none. */
import { requireInput, reshapeLike, type GradientModule } from './rule.js';

export const unsqueezeGradient: GradientModule = {
  opType: 'Unsqueeze',
  rule: (ctx) => [reshapeLike(ctx.b, ctx.grad, requireInput(ctx, 0)), null],
};
