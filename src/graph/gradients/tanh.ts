/** Gradient of Tanh (`y = tanh x`): `g * (1 - y^2)`. */
import { scalar, type GradientModule } from './rule.js';

export const tanhGradient: GradientModule = {
  opType: 'Tanh',
  rule: ({ b, grad, outputs }) => [b.mul(grad, b.sub(scalar(b, 1), b.mul(outputs[0], outputs[0])))],
};
