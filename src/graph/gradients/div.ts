/** Gradient of Div (`y = a / b`): `g / b` for `a` and `-g * y / b` for `b`, each summed over its broadcast axes. */
import { reduceToShape, requireInput, type GradientModule } from './rule.js';

export const divGradient: GradientModule = {
  opType: 'Div',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const numerator = requireInput(ctx, 0);
    const denominator = requireInput(ctx, 1);
    const gradNumerator = b.div(grad, denominator);
    const gradDenominator = b.neg(b.div(b.mul(grad, ctx.outputs[0]), denominator));
    return [reduceToShape(b, gradNumerator, numerator), reduceToShape(b, gradDenominator, denominator)];
  },
};
