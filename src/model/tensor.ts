/**
 * Host-side tensors: plain typed arrays with a shape, used for checkpoint weights, module
 * parameters and everything passed to or read from ONNX Runtime.
 * @module
 */

/** Element types that host tensors use. Checkpoints in float16 or bfloat16 are widened to float32 on load. */
export type HostDType = 'float32' | 'int64';

/** A dense row-major tensor in host memory. */
export interface HostTensor {
  readonly dtype: 'float32';
  /** Dimensions, outermost first; `[]` is a scalar. */
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Number of elements of a shape (1 for a scalar). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Creates a float32 tensor, checking that the data length matches the shape. */
export function floatTensor(shape: readonly number[], data?: Float32Array): HostTensor {
  const n = sizeOf(shape);
  const values = data ?? new Float32Array(n);
  if (values.length !== n) {
    throw new Error(`tensor data has ${values.length} elements but shape [${shape.join(', ')}] needs ${n}`);
  }
  return { dtype: 'float32', shape: [...shape], data: values };
}

/** Formats a shape as `[a, b, c]` for error messages. */
export function formatShape(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`;
}
