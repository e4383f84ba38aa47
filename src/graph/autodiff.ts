/**
 * Reverse-mode automatic differentiation over the graph IR. {@link differentiate} reads the
 * nodes emitted so far by a {@link GraphBuilder}, walks them backwards from a scalar loss, and
 * appends the gradient computation to the same builder as ordinary ONNX ops, so the caller can
 * declare the gradients as outputs and keep building.
 * @module
 */
import type { GraphBuilder } from './builder.js';
import type { Initializer, Node, Value } from './ir.js';
import { createGradientRegistry, type GradientRegistry } from './gradients/index.js';
import { GradientError, type GradientContext } from './gradients/rule.js';
import { formatDims } from './shape.js';

export { GradientError } from './gradients/rule.js';

let defaultRegistry: GradientRegistry | undefined;

function initializerInts(node: Node, index: number, initializer: Initializer | undefined): number[] {
  if (!initializer || initializer.dtype !== 'int64') {
    throw new GradientError(`${node.opType} node ${node.name}: input ${index} (${node.inputs[index]}) must be an int64 constant for its gradient rule`);
  }
  return Array.from(initializer.data as BigInt64Array, (x) => Number(x));
}

function sameShape(a: Value, b: Value): boolean {
  return a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

/**
 * Appends to `b` the gradient of `loss` with respect to each value in `wrt`, and returns those
 * gradients in the order of `wrt` (same shapes as `wrt`).
 *
 * Only nodes on a path from some `wrt` value to `loss` are differentiated, and only float32
 * values carry gradients, so int64 indices and bool masks are never walked. Gradients of a value
 * used several times are summed with Add. A `wrt` value that does not reach `loss` gets zeros.
 * Frozen initializers not listed in `wrt` get no gradient.
 *
 * @param b the builder that emitted `loss`; the gradient nodes are appended to it.
 * @param loss a float32 value with one element (shape `[]` or all dims 1).
 * @param wrt float32 values of the same builder, usually graph inputs holding trainable parameters.
 * @param registry gradient rules by op type; every shipped rule by default.
 * @throws {GradientError} when `loss` is not a one-element float32 value, a value is not from `b`,
 *   a node on the path has an op with no rule, or a rule gives no gradient for a float32 input on the path.
 */
export function differentiate(b: GraphBuilder, loss: Value, wrt: readonly Value[], registry?: GradientRegistry): Value[] {
  const rules = registry ?? (defaultRegistry ??= createGradientRegistry());
  const { nodes, values, initializers } = b.snapshot();

  if (loss.dtype !== 'float32' || !loss.shape.every((d) => d === 1)) {
    throw new GradientError(`loss ${loss.name} must be a float32 value with one element, got ${loss.dtype}${formatDims(loss.shape)}; reduce it first (e.g. ReduceSum with keepdims 0)`);
  }
  for (const v of [loss, ...wrt]) {
    if (values.get(v.name) !== v) throw new GradientError(`value ${v.name} does not belong to graph ${b.graphName}`);
  }
  for (const v of wrt) {
    if (v.dtype !== 'float32') throw new GradientError(`cannot differentiate with respect to ${v.name}: it is ${v.dtype}, and only float32 values have gradients`);
  }

  // Forward pass: float32 values that depend on some `wrt` value.
  const dependsOnWrt = new Set(wrt.map((v) => v.name));
  for (const node of nodes) {
    if (!node.inputs.some((name) => dependsOnWrt.has(name))) continue;
    for (const name of node.outputs) if (values.get(name)?.dtype === 'float32') dependsOnWrt.add(name);
  }

  // Backward pass: values that `loss` depends on, and the nodes on a path from `wrt` to `loss`.
  const reachesLoss = new Set([loss.name]);
  const path: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!node.outputs.some((name) => reachesLoss.has(name) && dependsOnWrt.has(name))) continue;
    path.push(node);
    for (const name of node.inputs) if (name) reachesLoss.add(name);
  }
  const onPath = (name: string): boolean => name !== '' && dependsOnWrt.has(name) && reachesLoss.has(name);

  const pending = new Map<string, Value[]>([[loss.name, [b.constFloat([1], loss.shape as number[])]]]);
  const total = (name: string): Value | null => {
    const parts = pending.get(name);
    if (!parts) return null;
    let sum = parts[0];
    for (const part of parts.slice(1)) sum = b.add(sum, part);
    pending.set(name, [sum]);
    return sum;
  };

  b.within('grad', () => {
    for (const node of path) {
      const rule = rules.get(node.opType);
      if (!rule) {
        throw new GradientError(`no gradient rule for op ${node.opType} (node ${node.name}); register a GradientModule for ${node.opType} or keep the node off the path to the loss`);
      }
      const outputs = node.outputs.map((name) => values.get(name) as Value);
      const outputGrads = node.outputs.map((name) => total(name));
      const first = outputGrads[0] ?? b.emit('ConstantOfShape', [b.shapeOf(outputs[0])], [{ dtype: 'float32', shape: outputs[0].shape }])[0];
      const context: GradientContext = {
        b,
        node,
        inputs: node.inputs.map((name) => (name ? (values.get(name) as Value) : null)),
        outputs,
        attributes: node.attributes,
        grad: first,
        outputGrads,
        constantInts: (index) => initializerInts(node, index, initializers.get(node.inputs[index] ?? '')),
      };
      const inputGrads = rule(context);
      node.inputs.forEach((name, index) => {
        if (!onPath(name)) return;
        const grad = inputGrads[index];
        const input = values.get(name) as Value;
        if (!grad) {
          throw new GradientError(`gradient rule for op ${node.opType} gives no gradient for input ${index} (${name}) of node ${node.name}, which lies on a path to the loss`);
        }
        if (!sameShape(grad, input)) {
          throw new GradientError(`gradient rule for op ${node.opType} (node ${node.name}) returned shape ${formatDims(grad.shape)} for input ${name}${formatDims(input.shape)}`);
        }
        const parts = pending.get(name);
        if (parts) parts.push(grad);
        else pending.set(name, [grad]);
      });
    }
  });

  return b.within('grad', () =>
    wrt.map((v) => total(v.name) ?? b.emit('ConstantOfShape', [b.shapeOf(v)], [{ dtype: 'float32', shape: v.shape }])[0]),
  );
}
