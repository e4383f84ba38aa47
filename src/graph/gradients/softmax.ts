/** Gradient of Softmax along `axis` (`y = softmax x`): `y * (g - sum(g * y, axis))`. */
import { intAttribute, type GradientModule } from './rule.js';

export const softmaxGradient: GradientModule = {
  opType: 'Softmax',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const y = ctx.outputs[0];
    const axis = intAttribute(ctx, 'axis', -1);
    const dot = b.reduceSum(b.mul(grad, y), [axis], true);
    return [b.mul(y, b.sub(grad, dot))];
  },
};
