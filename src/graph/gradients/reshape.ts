/** Gradient of Reshape: the upstream gradient reshaped back to the input's shape. The target shape gets none. */
import { requireInput, reshapeLike, type GradientModule } from './rule.js';

export const reshapeGradient: GradientModule = {
  opType: 'Reshape',
  rule: (ctx) => [reshapeLike(ctx.b, ctx.grad, requireInput(ctx, 0)), null],
};
