/**
 * Gradient of Gather with respect to `data`: the upstream gradient scattered back to the
 * gathered rows with ScatterND (`reduction = add`), so repeated indices accumulate. ScatterND
 * writes along the leading dims, so for `axis > 0` the gradient is transposed to put the index
 * dims first, scattered into zeros of the transposed data shape, and transposed back. This
 * costs one zero tensor the size of `data`. The indices get no gradient.
 */
import { requireInput, type GradientModule } from './rule.js';

export const gatherGradient: GradientModule = {
  opType: 'Gather',
  rule: (ctx) => {
    const { b, grad } = ctx;
    const data = requireInput(ctx, 0);
    const indices = requireInput(ctx, 1);
    const rank = data.shape.length;
    const rawAxis = ctx.attributes.axis?.kind === 'int' ? ctx.attributes.axis.value : 0;
    const axis = rawAxis < 0 ? rawAxis + rank : rawAxis;
    const indexRank = indices.shape.length;

    // Move `axis` of data to the front: [d_axis, d_0 .. d_{axis-1}, d_{axis+1} ..].
    const dataPerm = [axis, ...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis)];
    // Gradient dims are [d_0 .. d_{axis-1}, I..., d_{axis+1} ..]; move the index dims I to the front.
    const gradPerm = [
      ...Array.from({ length: indexRank }, (_, i) => axis + i),
      ...Array.from({ length: axis }, (_, i) => i),
      ...Array.from({ length: rank - axis - 1 }, (_, i) => axis + indexRank + i),
    ];
    const moved = axis === 0 ? data : b.transpose(data, dataPerm);
    const updates = axis === 0 ? grad : b.transpose(grad, gradPerm); // [I..., rest of data dims]
    const zeros = b.emit('ConstantOfShape', [b.shapeOf(moved)], [{ dtype: 'float32', shape: moved.shape }])[0];
    const scatterIndices = b.unsqueeze(indices, [indexRank]); // [I..., 1]
    const scattered = b.emit('ScatterND', [zeros, scatterIndices, updates], [{ dtype: 'float32', shape: moved.shape }], {
      reduction: { kind: 'string', value: 'add' },
    })[0];
    if (axis === 0) return [scattered, null];
    const inverse = new Array<number>(rank);
    dataPerm.forEach((source, target) => {
      inverse[source] = target;
    });
    return [b.transpose(scattered, inverse), null];
  },
};
