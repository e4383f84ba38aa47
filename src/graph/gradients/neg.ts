/** Gradient of Neg: `-g`. */
import type { GradientModule } from './rule.js';

export const negGradient: GradientModule = { opType: 'Neg', rule: ({ b, grad }) => [b.neg(grad)] };
