/**
 * Types and shared helpers for gradient rules. A rule receives one forward node and the
 * gradient of the loss with respect to its output, emits ordinary forward ops through the
 * {@link GraphBuilder}, and returns the gradient with respect to each input.
 * @module
 */
import type { GraphBuilder } from '../builder.js';
import type { Attribute, Node, Value } from '../ir.js';
import { formatDims } from '../shape.js';

/** Error raised while differentiating a graph; the message names the op, the node and the values. */
export class GradientError extends Error {
  override readonly name = 'GradientError';
}

/** The forward node and builder that a rule receives. */
export interface GradientContext {
  readonly b: GraphBuilder;
  readonly node: Node;
  /** Forward inputs in node order; null marks an omitted optional input. */
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attributes: Readonly<Record<string, Attribute>>;
  /** Gradient of the loss with respect to `outputs[0]`; zeros when only other outputs reach the loss. */
  readonly grad: Value;
  /** Gradient per output; null for an output that does not reach the loss. */
  readonly outputGrads: readonly (Value | null)[];
  /** Reads input `index` as integers; throws a {@link GradientError} unless it is an initializer (a graph constant). */
  constantInts(index: number): number[];
}

/** Returns one gradient per forward input, or null for an input that has none (int64 indices, axes, conditions). */
export type GradientRule = (ctx: GradientContext) => (Value | null)[];

/** One module of `gradients/`: the ONNX op type and its rule. */
export interface GradientModule {
  readonly opType: string;
  readonly rule: GradientRule;
}

/** Returns input `index`, throwing when the optional input is omitted. */
export function requireInput(ctx: GradientContext, index: number): Value {
  const value = ctx.inputs[index];
  if (!value) throw new GradientError(`${ctx.node.opType} node ${ctx.node.name}: input ${index} is omitted, but its gradient rule needs it`);
  return value;
}

/** Reads an int attribute, with the ONNX default when it is absent. */
export function intAttribute(ctx: GradientContext, name: string, fallback: number): number {
  const attribute = ctx.attributes[name];
  if (!attribute) return fallback;
  if (attribute.kind !== 'int') throw new GradientError(`${ctx.node.opType} node ${ctx.node.name}: attribute ${name} should be an int, got ${attribute.kind}`);
  return attribute.value;
}

/** Reads a float attribute, with the ONNX default when it is absent. */
export function floatAttribute(ctx: GradientContext, name: string, fallback: number): number {
  const attribute = ctx.attributes[name];
  if (!attribute) return fallback;
  if (attribute.kind !== 'float') throw new GradientError(`${ctx.node.opType} node ${ctx.node.name}: attribute ${name} should be a float, got ${attribute.kind}`);
  return attribute.value;
}

function isStatic(shape: readonly (number | string)[]): shape is number[] {
  return shape.every((d) => typeof d === 'number');
}

/** Reshapes `grad` to the shape of `like`: a constant target when the shape is static, else `Shape(like)` at run time. */
export function reshapeLike(b: GraphBuilder, grad: Value, like: Value): Value {
  if (isStatic(like.shape)) return b.reshape(grad, like.shape);
  return b.emit('Reshape', [grad, b.shapeOf(like)], [{ dtype: grad.dtype, shape: like.shape }])[0];
}

/** Broadcasts `grad` to the runtime shape of `like` with Expand. */
export function expandLike(b: GraphBuilder, grad: Value, like: Value): Value {
  return b.emit('Expand', [grad, b.shapeOf(like)], [{ dtype: grad.dtype, shape: like.shape }])[0];
}

/**
 * Undoes numpy broadcasting: sums `grad` (the shape of a broadcast result) over the axes where
 * `target` was broadcast, then drops the leading axes that `target` lacks. A dim that is 1 in
 * `target` is summed even when the result dim is symbolic, which is correct for any bound size.
 * Throws when a symbolic `target` dim faces a different result dim, because whether it was
 * broadcast is then only known at run time.
 */
export function reduceToShape(b: GraphBuilder, grad: Value, target: Value): Value {
  const rank = grad.shape.length;
  const lead = rank - target.shape.length;
  if (lead < 0) {
    throw new GradientError(`cannot reduce gradient ${grad.name}${formatDims(grad.shape)} to the larger rank of ${target.name}${formatDims(target.shape)}`);
  }
  const axes: number[] = [];
  for (let i = 0; i < rank; i++) {
    if (i < lead) {
      axes.push(i);
      continue;
    }
    const want = target.shape[i - lead];
    const have = grad.shape[i];
    if (want === have) continue;
    if (want === 1) axes.push(i);
    else {
      throw new GradientError(
        `cannot tell whether dim ${i - lead} of ${target.name}${formatDims(target.shape)} was broadcast to ${have} in gradient ${grad.name}${formatDims(grad.shape)}; give both the same symbol or a static size`,
      );
    }
  }
  if (axes.length === 0) return grad;
  const summed = b.reduceSum(grad, axes, true);
  if (lead === 0) return summed;
  return b.squeeze(summed, Array.from({ length: lead }, (_, i) => i));
}

/** Returns a float32 scalar constant. */
export function scalar(b: GraphBuilder, value: number): Value {
  return b.constFloat([value], []);
}
