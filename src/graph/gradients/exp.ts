/** Gradient of Exp (`y = e^x`): `g * y`. */
import type { GradientModule } from './rule.js';

export const expGradient: GradientModule = { opType: 'Exp', rule: ({ b, grad, outputs }) => [b.mul(grad, outputs[0])] };
