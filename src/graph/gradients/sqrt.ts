/** Gradient of Sqrt (`y = sqrt x`): `g * 0.5 / y`. */
import { scalar, type GradientModule } from './rule.js';

export const sqrtGradient: GradientModule = {
  opType: 'Sqrt',
  rule: ({ b, grad, outputs }) => [b.div(b.mul(grad, scalar(b, 0.5)), outputs[0])],
};
