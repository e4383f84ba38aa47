/** Gradient of Sigmoid (`y = 1 / (1 + e^-x)`): `g * y * (1 - y)`. */
import { scalar, type GradientModule } from './rule.js';

export const sigmoidGradient: GradientModule = {
  opType: 'Sigmoid',
  rule: ({ b, grad, outputs }) => [b.mul(grad, b.mul(outputs[0], b.sub(scalar(b, 1), outputs[0])))],
};
