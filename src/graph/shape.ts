/**
 * Static shape arithmetic over symbolic dimensions, used by the op builders to derive and check
 * output shapes before a node is emitted.
 * @module
 */
import { GraphBuildError, type Dim } from './ir.js';

export function formatDims(shape: readonly Dim[]): string {
  return `[${shape.join(', ')}]`;
}

/** Numpy-style broadcasting of two shapes. Throws naming `op` when a pair of dims cannot broadcast. */
export function broadcastShapes(op: string, a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const da = i < rank - a.length ? 1 : a[i - (rank - a.length)];
    const db = i < rank - b.length ? 1 : b[i - (rank - b.length)];
    if (da === db) out.push(da);
    else if (da === 1) out.push(db);
    else if (db === 1) out.push(da);
    else {
      throw new GraphBuildError(`${op}: shapes ${formatDims(a)} and ${formatDims(b)} do not broadcast (dims ${da} and ${db})`);
    }
  }
  return out;
}

/** Normalises a possibly negative axis for a tensor of `rank` dims. */
export function normalizeAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new GraphBuildError(`${op}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** Product of dims as a dim: a number when all are known, else a `*`-joined symbol. */
export function productDim(dims: readonly Dim[]): Dim {
  let numeric = 1;
  const symbols: string[] = [];
  for (const d of dims) {
    if (typeof d === 'number') numeric *= d;
    else symbols.push(d);
  }
  if (symbols.length === 0) return numeric;
  if (numeric === 1) return symbols.join('*');
  return [String(numeric), ...symbols].join('*');
}

function factors(dim: Dim): { numeric: number; symbols: string[] } {
  if (typeof dim === 'number') return { numeric: dim, symbols: [] };
  const parts = dim.split('*');
  let numeric = 1;
  const symbols: string[] = [];
  for (const p of parts) {
    if (/^\d+$/.test(p)) numeric *= Number(p);
    else symbols.push(p);
  }
  return { numeric, symbols };
}

/**
 * Output shape of ONNX Reshape with a static target, where 0 copies the input dim at that index
 * and one -1 is inferred. Symbolic dims cancel when the same symbol appears in input and target.
 */
export function reshapeShape(input: readonly Dim[], target: readonly number[]): Dim[] {
  const inferred = target.filter((t) => t === -1).length;
  if (inferred > 1) throw new GraphBuildError(`Reshape: target ${formatDims(target)} has more than one -1`);
  const out: Dim[] = target.map((t, i) => {
    if (t === 0) {
      if (i >= input.length) throw new GraphBuildError(`Reshape: target ${formatDims(target)} copies dim ${i} of ${formatDims(input)}, which has no such dim`);
      return input[i];
    }
    if (t < -1 || !Number.isInteger(t)) throw new GraphBuildError(`Reshape: invalid target dim ${t} in ${formatDims(target)}`);
    return t;
  });
  const inputNumeric = input.map(factors).reduce((acc, f) => ({ numeric: acc.numeric * f.numeric, symbols: [...acc.symbols, ...f.symbols] }), { numeric: 1, symbols: [] as string[] });
  const known = out.filter((d, i) => target[i] !== -1).map(factors).reduce((acc, f) => ({ numeric: acc.numeric * f.numeric, symbols: [...acc.symbols, ...f.symbols] }), { numeric: 1, symbols: [] as string[] });
  const remaining = [...inputNumeric.symbols];
  for (const s of known.symbols) {
    const at = remaining.indexOf(s);
    if (at < 0) {
      throw new GraphBuildError(`Reshape: cannot reshape ${formatDims(input)} to ${formatDims(out)}: symbol ${s} is not in the input`);
    }
    remaining.splice(at, 1);
  }
  if (inputNumeric.numeric % known.numeric !== 0) {
    throw new GraphBuildError(`Reshape: cannot reshape ${formatDims(input)} to target ${formatDims(target)}: sizes do not divide`);
  }
  const rest = inputNumeric.numeric / known.numeric;
  if (inferred === 0) {
    if (remaining.length > 0 || rest !== 1) {
      throw new GraphBuildError(`Reshape: cannot reshape ${formatDims(input)} to ${formatDims(out)}: element counts differ`);
    }
    return out;
  }
  const at = target.indexOf(-1);
  out[at] = productDim([...(rest === 1 ? [] : [rest]), ...remaining]);
  return out;
}
