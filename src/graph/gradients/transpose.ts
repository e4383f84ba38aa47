/** Gradient of Transpose: the upstream gradient transposed by the inverse permutation. */
import { GradientError, type GradientModule } from './rule.js';

export const transposeGradient: GradientModule = {
  opType: 'Transpose',
  rule: ({ b, grad, attributes, node }) => {
    const perm = attributes.perm;
    if (!perm || perm.kind !== 'ints') {
      throw new GradientError(`Transpose node ${node.name}: the gradient rule needs an explicit perm attribute`);
    }
    const inverse = new Array<number>(perm.value.length);
    perm.value.forEach((source, target) => {
      inverse[source] = target;
    });
    return [b.transpose(grad, inverse)];
  },
};
