/** Gradient of ReduceSum: the upstream gradient broadcast back over the reduced axes. The axes get none. */
import { reducedGradient } from './reduce-common.js';
import type { GradientModule } from './rule.js';

export const reduceSumGradient: GradientModule = {
  opType: 'ReduceSum',
  rule: (ctx) => [reducedGradient(ctx).expanded, null],
};
