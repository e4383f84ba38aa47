/**
 * Deliberately naive float64 reference for the inducer-tuning math of one attention layer:
 * the λ gate, the value-path correction Δ and the LoRA correction of the query. Plain loops,
 * no shared code with the production graph builder, so tests can check the ONNX graphs against it.
 *
 * Method: "Inducer-tuning: Connecting Prefix-tuning and Adapter-tuning", Chen et al., EMNLP 2022,
 * in the form of its official GPT-2 code (value extension on, no head sharing, no gating
 * ablation). Row-vector convention: u = tanh(q A + a), p_k = q + u B + b.
 * @module
 */

/** Flat row-major parameter storage accepted by the reference. */
export type ParameterArray = Float64Array | Float32Array;

/**
 * Inducer parameters of one layer, flat row-major. H query heads, head size d, model width D.
 * Key tensors are read only when `keyRank >= 2`; with `keyRank` 0 or 1 the inducer key is the query.
 */
export interface NaiveInducerParams {
  /** A_k, `[H, d, keyRank]`. */
  readonly keyDown?: ParameterArray;
  /** a_k, `[H, keyRank]`. */
  readonly keyDownBias?: ParameterArray;
  /** B_k, `[H, keyRank, d]`. */
  readonly keyUp?: ParameterArray;
  /** b_k, `[H, d]`. */
  readonly keyUpBias?: ParameterArray;
  /** A_v, `[H, d, valueRank]`. */
  readonly valueDown: ParameterArray;
  /** a_v, `[H, valueRank]`. */
  readonly valueDownBias: ParameterArray;
  /** B_v, `[H, valueRank, D]`: maps each head's hidden vector straight into model space. */
  readonly valueUp: ParameterArray;
  /** b_v, `[D]`: added to every position, not gated by λ. */
  readonly valueUpBias: ParameterArray;
  /** Width r_k of the key MLP. Both 0 and 1 mean "no key MLP". */
  readonly keyRank: number;
  /** Width r_v of the value MLP. */
  readonly valueRank: number;
}

/** Error for inputs of the naive reference whose sizes do not fit together. */
export class NaiveReferenceError extends Error {
  override readonly name = 'NaiveReferenceError';
}

function checkLength(name: string, array: ParameterArray | undefined, expected: number): ParameterArray {
  if (array === undefined) {
    throw new NaiveReferenceError(`naive inducer: parameter ${name} is missing; it needs ${expected} values`);
  }
  if (array.length !== expected) {
    throw new NaiveReferenceError(
      `naive inducer: parameter ${name} has ${array.length} values but the shapes need ${expected}`,
    );
  }
  return array;
}

/**
 * Computes the inducer gate and value-path correction of one sequence in one layer.
 *
 * `q` is `[H][N][d]`: the queries exactly as the attention scores use them (after the LoRA
 * correction and, for rotary models, after the rotation). `scores` is `[H][N][M]`: the scaled,
 * masked attention logits ⟨q_i, k_j⟩/√d, with masked entries set to `-Infinity`.
 *
 * Returns `lambda` `[H][N]` and `delta` `[N][D]`, the correction added to the attention block's
 * output after the output projection and its bias. λ is column 0 of an explicit softmax over
 * `[s, S_1..S_M]`, where s = ⟨q, p_k⟩/√d is never masked.
 */
export function naiveInducer(
  q: readonly (readonly (readonly number[])[])[],
  scores: readonly (readonly (readonly number[])[])[],
  params: NaiveInducerParams,
): { lambda: number[][]; delta: number[][] } {
  const numHeads = q.length;
  if (numHeads === 0) throw new NaiveReferenceError('naive inducer: q has no heads');
  const numQueries = q[0].length;
  const headDim = numQueries > 0 ? q[0][0].length : 0;
  const modelWidth = params.valueUpBias.length;
  const keyRank = params.keyRank;
  const valueRank = params.valueRank;
  if (scores.length !== numHeads) {
    throw new NaiveReferenceError(`naive inducer: scores have ${scores.length} heads but q has ${numHeads}`);
  }

  const valueDown = checkLength('valueDown [H, d, rv]', params.valueDown, numHeads * headDim * valueRank);
  const valueDownBias = checkLength('valueDownBias [H, rv]', params.valueDownBias, numHeads * valueRank);
  const valueUp = checkLength('valueUp [H, rv, D]', params.valueUp, numHeads * valueRank * modelWidth);
  const valueUpBias = params.valueUpBias;
  const hasKeyMlp = keyRank >= 2;
  const keyDown = hasKeyMlp ? checkLength('keyDown [H, d, rk]', params.keyDown, numHeads * headDim * keyRank) : null;
  const keyDownBias = hasKeyMlp ? checkLength('keyDownBias [H, rk]', params.keyDownBias, numHeads * keyRank) : null;
  const keyUp = hasKeyMlp ? checkLength('keyUp [H, rk, d]', params.keyUp, numHeads * keyRank * headDim) : null;
  const keyUpBias = hasKeyMlp ? checkLength('keyUpBias [H, d]', params.keyUpBias, numHeads * headDim) : null;

  const lambda: number[][] = [];
  const delta: number[][] = [];
  for (let i = 0; i < numQueries; i++) delta.push(Array.from(valueUpBias, Number));

  for (let h = 0; h < numHeads; h++) {
    if (q[h].length !== numQueries || scores[h].length !== numQueries) {
      throw new NaiveReferenceError(
        `naive inducer: head ${h} has ${q[h].length} queries and ${scores[h].length} score rows; expected ${numQueries}`,
      );
    }
    const lambdaOfHead: number[] = [];
    for (let i = 0; i < numQueries; i++) {
      const query = q[h][i];

      // Inducer key p_k = q + tanh(q A_k + a_k) B_k + b_k, or p_k = q without a key MLP.
      const inducerKey = Array.from(query);
      if (hasKeyMlp && keyDown && keyDownBias && keyUp && keyUpBias) {
        for (let r = 0; r < keyRank; r++) {
          let pre = keyDownBias[h * keyRank + r];
          for (let c = 0; c < headDim; c++) pre += query[c] * keyDown[(h * headDim + c) * keyRank + r];
          const u = Math.tanh(pre);
          for (let c = 0; c < headDim; c++) inducerKey[c] += u * keyUp[(h * keyRank + r) * headDim + c];
        }
        for (let c = 0; c < headDim; c++) inducerKey[c] += keyUpBias[h * headDim + c];
      }

      // Inducer logit s, then the joint softmax over [s, S_1..S_M] whose column 0 is λ.
      let dot = 0;
      for (let c = 0; c < headDim; c++) dot += query[c] * inducerKey[c];
      const joint = [dot / Math.sqrt(headDim), ...scores[h][i]];
      let max = -Infinity;
      for (const value of joint) max = Math.max(max, value);
      let denominator = 0;
      const weights = joint.map((value) => Math.exp(value - max));
      for (const w of weights) denominator += w;
      const gate = weights[0] / denominator;
      lambdaOfHead.push(gate);

      // Value path: λ · tanh(q A_v + a_v) B_v, summed over heads into model space.
      for (let r = 0; r < valueRank; r++) {
        let pre = valueDownBias[h * valueRank + r];
        for (let c = 0; c < headDim; c++) pre += query[c] * valueDown[(h * headDim + c) * valueRank + r];
        const gated = gate * Math.tanh(pre);
        for (let o = 0; o < modelWidth; o++) delta[i][o] += gated * valueUp[(h * valueRank + r) * modelWidth + o];
      }
    }
    lambda.push(lambdaOfHead);
  }
  return { lambda, delta };
}

/**
 * Computes the LoRA correction of the query projection, ΔQ = s (x Aᵀ) Bᵀ + s·bias with
 * s = alpha / rank, for every row of `x` (`[N][D]`). `A` is `[rank, D]`, `B` is `[Dq, rank]`,
 * `bias` is `[Dq]` or null. Returns `[N][Dq]`.
 */
export function naiveLoraQ(
  x: readonly (readonly number[])[],
  A: ParameterArray,
  B: ParameterArray,
  bias: ParameterArray | null,
  alpha: number,
  rank: number,
): number[][] {
  if (!Number.isInteger(rank) || rank < 1) {
    throw new NaiveReferenceError(`naive LoRA-Q: rank ${rank} must be a positive integer`);
  }
  const inputWidth = A.length / rank;
  const outputWidth = B.length / rank;
  if (!Number.isInteger(inputWidth) || !Number.isInteger(outputWidth)) {
    throw new NaiveReferenceError(
      `naive LoRA-Q: A has ${A.length} values and B has ${B.length}; both must be multiples of rank ${rank}`,
    );
  }
  if (bias !== null && bias.length !== outputWidth) {
    throw new NaiveReferenceError(`naive LoRA-Q: bias has ${bias.length} values but B has ${outputWidth} rows`);
  }
  const scale = alpha / rank;
  const out: number[][] = [];
  for (const row of x) {
    if (row.length !== inputWidth) {
      throw new NaiveReferenceError(`naive LoRA-Q: input row has ${row.length} values but A has ${inputWidth} columns`);
    }
    const hidden = new Array<number>(rank).fill(0);
    for (let r = 0; r < rank; r++) {
      for (let c = 0; c < inputWidth; c++) hidden[r] += row[c] * A[r * inputWidth + c];
    }
    const correction = new Array<number>(outputWidth).fill(0);
    for (let o = 0; o < outputWidth; o++) {
      let sum = 0;
      for (let r = 0; r < rank; r++) sum += hidden[r] * B[o * rank + r];
      correction[o] = scale * sum + (bias === null ? 0 : scale * bias[o]);
    }
    out.push(correction);
  }
  return out;
}
