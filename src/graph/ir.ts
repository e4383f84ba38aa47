/**
 * The graph IR: typed values with symbolic shapes, nodes, initializers. Builders create it,
 * autodiff transforms it, and `onnx-writer.ts` serializes it to an ONNX `ModelProto`.
 * @module
 */

/** Element types used by our graphs. */
export type DType = 'float32' | 'int64' | 'bool';

/** A dimension: a known size, or a symbol such as `'batch'` that is bound when the graph runs. */
export type Dim = number | string;

/** A tensor-valued edge of the graph. */
export interface Value {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

/** An ONNX attribute with its type made explicit, because ONNX distinguishes `INT` from `FLOAT`. */
export type Attribute =
  | { readonly kind: 'int'; readonly value: number }
  | { readonly kind: 'float'; readonly value: number }
  | { readonly kind: 'ints'; readonly value: readonly number[] }
  | { readonly kind: 'floats'; readonly value: readonly number[] }
  | { readonly kind: 'string'; readonly value: string };

/** One operator application. Empty strings in `inputs` mark omitted optional inputs, as in ONNX. */
export interface Node {
  readonly opType: string;
  readonly name: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: Readonly<Record<string, Attribute>>;
}

/** Data of an initializer; `bool` tensors are stored one byte per element. */
export type InitializerData = Float32Array | BigInt64Array | Uint8Array;

/** A constant tensor stored in the graph (a frozen weight or a small constant). */
export interface Initializer {
  readonly name: string;
  readonly dtype: DType;
  readonly dims: readonly number[];
  readonly data: InitializerData;
}

/** A complete graph, in topological node order. */
export interface Graph {
  readonly name: string;
  readonly inputs: readonly Value[];
  readonly outputs: readonly Value[];
  readonly nodes: readonly Node[];
  readonly initializers: ReadonlyMap<string, Initializer>;
  /** Every value by name (inputs, initializers, node outputs). */
  readonly values: ReadonlyMap<string, Value>;
}

/** Error raised while building a graph; messages name the op, the shapes and the attributes. */
export class GraphBuildError extends Error {
  override readonly name = 'GraphBuildError';
}
