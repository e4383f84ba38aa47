/**
 * Graph builder: one method per ONNX op we use. Each method validates its inputs, derives the
 * output shape (symbolic dims allowed), then appends the node. Errors name the op and the shapes.
 * @module
 */
import {
  GraphBuildError,
  type Attribute,
  type DType,
  type Dim,
  type Graph,
  type Initializer,
  type InitializerData,
  type Node,
  type Value,
} from './ir.js';
import { broadcastShapes, formatDims, normalizeAxis, reshapeShape } from './shape.js';

function describe(v: Value): string {
  return `${v.name}: ${v.dtype}${formatDims(v.shape)}`;
}

/** Builds a {@link Graph} node by node. */
export class GraphBuilder {
  private readonly nodes: Node[] = [];
  private readonly inputs: Value[] = [];
  private readonly outputs: Value[] = [];
  private readonly initializers = new Map<string, Initializer>();
  private readonly values = new Map<string, Value>();
  private readonly constantCache = new Map<string, Value>();
  private counter = 0;
  private scope = '';

  constructor(readonly graphName: string) {}

  /** Runs `body` with node and value names prefixed by `prefix/`, so errors and profiles show where a node came from. */
  within<T>(prefix: string, body: () => T): T {
    const saved = this.scope;
    this.scope = saved ? `${saved}/${prefix}` : prefix;
    try {
      return body();
    } finally {
      this.scope = saved;
    }
  }

  private freshName(base: string): string {
    this.counter += 1;
    return this.scope ? `${this.scope}/${base}_${this.counter}` : `${base}_${this.counter}`;
  }

  private register(value: Value): Value {
    if (this.values.has(value.name)) throw new GraphBuildError(`value name "${value.name}" is defined twice`);
    this.values.set(value.name, value);
    return value;
  }

  private check(value: Value): void {
    if (this.values.get(value.name) !== value) {
      throw new GraphBuildError(`value "${value.name}" does not belong to graph ${this.graphName}`);
    }
  }

  /** Appends a node with explicitly given outputs; the op methods below are the usual entry point. */
  emit(opType: string, inputs: readonly (Value | null)[], outputs: readonly { dtype: DType; shape: readonly Dim[]; name?: string }[], attributes: Record<string, Attribute> = {}): Value[] {
    for (const input of inputs) if (input) this.check(input);
    const outs = outputs.map((o) => this.register({ name: o.name ?? this.freshName(opType), dtype: o.dtype, shape: [...o.shape] }));
    this.nodes.push({
      opType,
      name: this.freshName(`${opType}_node`),
      inputs: inputs.map((i) => (i ? i.name : '')),
      outputs: outs.map((o) => o.name),
      attributes,
    });
    return outs;
  }

  private emitOne(opType: string, inputs: readonly (Value | null)[], dtype: DType, shape: readonly Dim[], attributes: Record<string, Attribute> = {}): Value {
    return this.emit(opType, inputs, [{ dtype, shape }], attributes)[0];
  }

  // ---- graph interface ------------------------------------------------------------------

  /** Declares a graph input. */
  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    const v = this.register({ name, dtype, shape: [...shape] });
    this.inputs.push(v);
    return v;
  }

  /** Declares `value` as a graph output called `name` (through an Identity node when the names differ). */
  output(value: Value, name: string): Value {
    this.check(value);
    const out = value.name === name ? value : this.emit('Identity', [value], [{ dtype: value.dtype, shape: value.shape, name }])[0];
    this.outputs.push(out);
    return out;
  }

  /** Adds a named initializer (a frozen weight). */
  initializer(name: string, dtype: DType, dims: readonly number[], data: InitializerData): Value {
    const count = dims.reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      throw new GraphBuildError(`initializer "${name}" has ${data.length} elements but dims ${formatDims(dims)} need ${count}`);
    }
    const v = this.register({ name, dtype, shape: [...dims] });
    this.initializers.set(name, { name, dtype, dims: [...dims], data });
    return v;
  }

  /** Adds a float32 constant, or returns the existing one with the same value. */
  constFloat(values: readonly number[] | Float32Array, dims: readonly number[] = [values.length]): Value {
    const key = `f:${formatDims(dims)}:${Array.from(values).join(',')}`;
    const cached = this.constantCache.get(key);
    if (cached) return cached;
    const v = this.initializer(`const_${this.constantCache.size}_f32`, 'float32', dims, Float32Array.from(values));
    this.constantCache.set(key, v);
    return v;
  }

  /** Adds an int64 constant, or returns the existing one with the same value. */
  constInt(values: readonly number[], dims: readonly number[] = [values.length]): Value {
    const key = `i:${formatDims(dims)}:${values.join(',')}`;
    const cached = this.constantCache.get(key);
    if (cached) return cached;
    const v = this.initializer(`const_${this.constantCache.size}_i64`, 'int64', dims, BigInt64Array.from(values.map((x) => BigInt(x))));
    this.constantCache.set(key, v);
    return v;
  }

  /** Returns the nodes, values and initializers emitted so far, for passes such as autodiff that read the graph and keep extending it. */
  snapshot(): Pick<Graph, 'nodes' | 'values' | 'initializers'> {
    return { nodes: [...this.nodes], values: new Map(this.values), initializers: new Map(this.initializers) };
  }

  /** Returns the finished graph. The builder should not be used afterwards. */
  build(): Graph {
    if (this.outputs.length === 0) throw new GraphBuildError(`graph ${this.graphName} has no outputs`);
    return {
      name: this.graphName,
      inputs: [...this.inputs],
      outputs: [...this.outputs],
      nodes: [...this.nodes],
      initializers: new Map(this.initializers),
      values: new Map(this.values),
    };
  }

  // ---- elementwise ----------------------------------------------------------------------

  private binary(op: string, a: Value, b: Value, resultType?: DType): Value {
    if (a.dtype !== b.dtype) throw new GraphBuildError(`${op}: dtypes differ: ${describe(a)} and ${describe(b)}`);
    return this.emitOne(op, [a, b], resultType ?? a.dtype, broadcastShapes(op, a.shape, b.shape));
  }

  add(a: Value, b: Value): Value {
    return this.binary('Add', a, b);
  }
  sub(a: Value, b: Value): Value {
    return this.binary('Sub', a, b);
  }
  mul(a: Value, b: Value): Value {
    return this.binary('Mul', a, b);
  }
  div(a: Value, b: Value): Value {
    return this.binary('Div', a, b);
  }
  pow(a: Value, b: Value): Value {
    return this.binary('Pow', a, b);
  }
  equal(a: Value, b: Value): Value {
    return this.binary('Equal', a, b, 'bool');
  }
  lessOrEqual(a: Value, b: Value): Value {
    return this.binary('LessOrEqual', a, b, 'bool');
  }
  and(a: Value, b: Value): Value {
    if (a.dtype !== 'bool' || b.dtype !== 'bool') throw new GraphBuildError(`And: inputs must be bool, got ${describe(a)} and ${describe(b)}`);
    return this.binary('And', a, b);
  }

  private unary(op: string, x: Value): Value {
    if (x.dtype !== 'float32') throw new GraphBuildError(`${op}: input must be float32, got ${describe(x)}`);
    return this.emitOne(op, [x], x.dtype, x.shape);
  }

  tanh(x: Value): Value {
    return this.unary('Tanh', x);
  }
  sigmoid(x: Value): Value {
    return this.unary('Sigmoid', x);
  }
  exp(x: Value): Value {
    return this.unary('Exp', x);
  }
  log(x: Value): Value {
    return this.unary('Log', x);
  }
  sqrt(x: Value): Value {
    return this.unary('Sqrt', x);
  }
  neg(x: Value): Value {
    return this.unary('Neg', x);
  }
  cos(x: Value): Value {
    return this.unary('Cos', x);
  }
  sin(x: Value): Value {
    return this.unary('Sin', x);
  }

  /** Elementwise `condition ? x : y` with broadcasting. */
  where(condition: Value, x: Value, y: Value): Value {
    if (condition.dtype !== 'bool') throw new GraphBuildError(`Where: condition must be bool, got ${describe(condition)}`);
    if (x.dtype !== y.dtype) throw new GraphBuildError(`Where: branch dtypes differ: ${describe(x)} and ${describe(y)}`);
    const shape = broadcastShapes('Where', broadcastShapes('Where', condition.shape, x.shape), y.shape);
    return this.emitOne('Where', [condition, x, y], x.dtype, shape);
  }

  cast(x: Value, to: DType): Value {
    const code = { float32: 1, int64: 7, bool: 9 }[to];
    return this.emitOne('Cast', [x], to, x.shape, { to: { kind: 'int', value: code } });
  }

  // ---- linear algebra -------------------------------------------------------------------

  /** Batched matrix product `[..., n, k] x [..., k, m] -> [..., n, m]` with broadcast batch dims. */
  matMul(a: Value, b: Value): Value {
    if (a.dtype !== 'float32' || b.dtype !== 'float32') throw new GraphBuildError(`MatMul: inputs must be float32, got ${describe(a)} and ${describe(b)}`);
    if (a.shape.length < 2 || b.shape.length < 2) {
      throw new GraphBuildError(`MatMul: inputs need rank 2 or more, got ${describe(a)} and ${describe(b)}`);
    }
    const n = a.shape[a.shape.length - 2];
    const k = a.shape[a.shape.length - 1];
    const k2 = b.shape[b.shape.length - 2];
    const m = b.shape[b.shape.length - 1];
    if (k !== k2) throw new GraphBuildError(`MatMul: inner dims differ: ${describe(a)} and ${describe(b)}`);
    const batch = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2));
    return this.emitOne('MatMul', [a, b], 'float32', [...batch, n, m]);
  }

  /**
   * ONNX Gemm on 2-D inputs: `alpha * op(a) x op(b) + beta * c`, where op transposes when asked.
   * Used for the LM head so that a tied `[V, D]` embedding needs no transposed copy.
   */
  gemm(a: Value, b: Value, options: { transA?: boolean; transB?: boolean; c?: Value } = {}): Value {
    if (a.shape.length !== 2 || b.shape.length !== 2) {
      throw new GraphBuildError(`Gemm: inputs must be 2-D, got ${describe(a)} and ${describe(b)}`);
    }
    const [n, k] = options.transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
    const [k2, m] = options.transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
    if (k !== k2) {
      throw new GraphBuildError(`Gemm: inner dims differ: ${describe(a)} and ${describe(b)} (transA=${!!options.transA}, transB=${!!options.transB})`);
    }
    const attributes: Record<string, Attribute> = {};
    if (options.transA) attributes.transA = { kind: 'int', value: 1 };
    if (options.transB) attributes.transB = { kind: 'int', value: 1 };
    const inputs = options.c ? [a, b, options.c] : [a, b];
    return this.emitOne('Gemm', inputs, 'float32', [n, m], attributes);
  }

  // ---- reductions and normalisation -----------------------------------------------------

  private reduce(op: string, x: Value, axes: readonly number[], keepDims: boolean): Value {
    const rank = x.shape.length;
    const normalized = axes.map((a) => normalizeAxis(op, a, rank));
    const shape: Dim[] = [];
    x.shape.forEach((d, i) => {
      if (!normalized.includes(i)) shape.push(d);
      else if (keepDims) shape.push(1);
    });
    return this.emitOne(op, [x, this.constInt(normalized)], x.dtype, shape, { keepdims: { kind: 'int', value: keepDims ? 1 : 0 } });
  }

  reduceSum(x: Value, axes: readonly number[], keepDims = true): Value {
    return this.reduce('ReduceSum', x, axes, keepDims);
  }
  reduceMax(x: Value, axes: readonly number[], keepDims = true): Value {
    return this.reduce('ReduceMax', x, axes, keepDims);
  }
  reduceMean(x: Value, axes: readonly number[], keepDims = true): Value {
    return this.reduce('ReduceMean', x, axes, keepDims);
  }

  softmax(x: Value, axis = -1): Value {
    normalizeAxis('Softmax', axis, x.shape.length);
    return this.emitOne('Softmax', [x], x.dtype, x.shape, { axis: { kind: 'int', value: axis } });
  }

  // ---- shape manipulation ---------------------------------------------------------------

  /** Reshape to a static target; 0 copies the input dim, -1 is inferred. */
  reshape(x: Value, target: readonly number[]): Value {
    const shape = reshapeShape(x.shape, target);
    return this.emitOne('Reshape', [x, this.constInt(target)], x.dtype, shape);
  }

  transpose(x: Value, perm: readonly number[]): Value {
    const rank = x.shape.length;
    const sorted = [...perm].sort((a, b) => a - b);
    if (perm.length !== rank || !sorted.every((p, i) => p === i)) {
      throw new GraphBuildError(`Transpose: perm [${perm.join(', ')}] is not a permutation of the ${rank} dims of ${describe(x)}`);
    }
    return this.emitOne('Transpose', [x], x.dtype, perm.map((p) => x.shape[p]), { perm: { kind: 'ints', value: perm } });
  }

  /** Concatenates along `axis`; the output dim is the sum when known, else the `+`-joined symbols (or `resultDim`). */
  concat(values: readonly Value[], axis: number, resultDim?: Dim): Value {
    if (values.length === 0) throw new GraphBuildError('Concat: no inputs');
    const first = values[0];
    const a = normalizeAxis('Concat', axis, first.shape.length);
    for (const v of values) {
      if (v.dtype !== first.dtype || v.shape.length !== first.shape.length || v.shape.some((d, i) => i !== a && d !== first.shape[i])) {
        throw new GraphBuildError(`Concat: axis ${axis}: ${describe(v)} does not match ${describe(first)}`);
      }
    }
    const dims = values.map((v) => v.shape[a]);
    const total = resultDim ?? (dims.every((d) => typeof d === 'number') ? (dims as number[]).reduce((x, y) => x + y, 0) : dims.join('+'));
    const shape = [...first.shape];
    shape[a] = total;
    return this.emitOne('Concat', values, first.dtype, shape, { axis: { kind: 'int', value: a } });
  }

  /** Static slice `[start, end)` along `axis`; `resultDim` names the output dim when it is not computable. */
  slice(x: Value, axis: number, start: number, end: number, resultDim?: Dim): Value {
    const a = normalizeAxis('Slice', axis, x.shape.length);
    const size = x.shape[a];
    let dim: Dim;
    if (resultDim !== undefined) dim = resultDim;
    else if (typeof size === 'number') {
      const s = Math.max(0, Math.min(size, start < 0 ? start + size : start));
      const e = Math.max(0, Math.min(size, end < 0 ? end + size : end));
      dim = Math.max(0, e - s);
    } else if (start >= 0 && end >= 0 && end < Number.MAX_SAFE_INTEGER) dim = end - start;
    else throw new GraphBuildError(`Slice: cannot derive the size of dim ${a} of ${describe(x)} for [${start}, ${end}); pass resultDim`);
    const shape = [...x.shape];
    shape[a] = dim;
    return this.emitOne('Slice', [x, this.constInt([start]), this.constInt([end]), this.constInt([a])], x.dtype, shape);
  }

  unsqueeze(x: Value, axes: readonly number[]): Value {
    const rank = x.shape.length + axes.length;
    const normalized = axes.map((a) => normalizeAxis('Unsqueeze', a, rank)).sort((p, q) => p - q);
    const shape: Dim[] = [];
    let source = 0;
    for (let i = 0; i < rank; i++) shape.push(normalized.includes(i) ? 1 : x.shape[source++]);
    return this.emitOne('Unsqueeze', [x, this.constInt(normalized)], x.dtype, shape);
  }

  squeeze(x: Value, axes: readonly number[]): Value {
    const normalized = axes.map((a) => normalizeAxis('Squeeze', a, x.shape.length));
    for (const a of normalized) {
      if (x.shape[a] !== 1) throw new GraphBuildError(`Squeeze: dim ${a} of ${describe(x)} is not 1`);
    }
    return this.emitOne('Squeeze', [x, this.constInt(normalized)], x.dtype, x.shape.filter((_, i) => !normalized.includes(i)));
  }

  /** ONNX Gather: `indices` replace dim `axis` of `data`. */
  gather(data: Value, indices: Value, axis = 0): Value {
    if (indices.dtype !== 'int64') throw new GraphBuildError(`Gather: indices must be int64, got ${describe(indices)}`);
    const a = normalizeAxis('Gather', axis, data.shape.length);
    const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
    return this.emitOne('Gather', [data, indices], data.dtype, shape, { axis: { kind: 'int', value: a } });
  }

  /** Returns the runtime shape of `x` as an int64 vector, or one dim of it as a 1-element vector. */
  shapeOf(x: Value, dim?: number): Value {
    if (dim === undefined) return this.emitOne('Shape', [x], 'int64', [x.shape.length]);
    const a = normalizeAxis('Shape', dim, x.shape.length);
    return this.emitOne('Shape', [x], 'int64', [1], { start: { kind: 'int', value: a }, end: { kind: 'int', value: a + 1 } });
  }

  /** ONNX Range over int64 scalars; `length` names the output dim. */
  range(start: Value, limit: Value, delta: Value, length: Dim): Value {
    for (const v of [start, limit, delta]) {
      if (v.shape.length !== 0) throw new GraphBuildError(`Range: start, limit and delta must be scalars, got ${describe(v)}`);
    }
    return this.emitOne('Range', [start, limit, delta], start.dtype, [length]);
  }
}
