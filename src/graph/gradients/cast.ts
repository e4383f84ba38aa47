/**
 * Gradient of Cast. Only float32 -> float32 passes a gradient; casts to or from int64 and bool
 * are not differentiable, and `differentiate` never walks int64 or bool values.
 */
import type { GradientModule } from './rule.js';

export const castGradient: GradientModule = {
  opType: 'Cast',
  rule: ({ inputs, outputs, grad }) => [inputs[0]?.dtype === 'float32' && outputs[0].dtype === 'float32' ? grad : null],
};
