/**
 * Checks the inducer hook's graph code (`loraQueryDelta`, `inducerGate`, `inducerValue`) against
 * the loop-based float64 reference in `test/reference/naive-inducer.ts`. Each case builds a small
 * ONNX graph, runs it in onnxruntime-node on seeded random float32 tensors and compares every
 * output element with the reference.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';

import { GraphBuilder } from '../../src/graph/builder.js';
import { serializeModel } from '../../src/graph/onnx-writer.js';
import { createRng, type Rng } from '../../src/runtime/rng.js';
import { inducerGate, inducerValue, loraQueryDelta, type LayerModuleParams } from '../../src/tuning/inducer-graph.js';
import { naiveInducer, naiveLoraQ } from '../reference/naive-inducer.js';

// Float32 has a unit roundoff of 6e-8. Each output is a short sum (at most 8 terms) of products,
// passed through tanh, sigmoid or a scale. Outputs reach a magnitude of about 10 (LoRA outputs with
// alpha / rank up to 16/3), so float32 rounding errors of up to about 1e-6 are expected. 1e-5
// leaves margin, while a formula mistake (a wrong scale, a missing bias or gate) moves outputs by
// 1e-2 or more.
const TOLERANCE = 1e-5;
// Zero units add exact zeros to every sum, so padded and unpadded graphs can differ only by the
// order in which onnxruntime accumulates, which is far below 1e-6 at these magnitudes.
const PADDING_TOLERANCE = 1e-6;

const NUM_HEADS = 2; // H
const NUM_QUERIES = 3; // N
const HEAD_DIM = 4; // d
const NUM_KEYS = 5; // M = T + N with T = 2 cached keys
const MODEL_WIDTH = 6; // D
const QUERY_WIDTH = NUM_HEADS * HEAD_DIM; // Dq
const NUM_PAST = NUM_KEYS - NUM_QUERIES;

// ---- modules ----------------------------------------------------------------------------

interface LoraSpec {
  readonly rank: number;
  readonly alpha: number;
  readonly bias: boolean;
}

interface LoraModule {
  readonly rank: number;
  readonly alpha: number;
  /** L_A, [rank, D] */
  readonly A: Float32Array;
  /** L_B, [Dq, rank] */
  readonly B: Float32Array;
  /** l_b, [Dq], or null when the module has no LoRA bias. */
  readonly bias: Float32Array | null;
}

/** One task's module for one layer at its own ranks. Key tensors are null when keyRank < 2. */
interface InducerModule {
  readonly keyRank: number;
  readonly valueRank: number;
  /** [H, d, keyRank] */
  readonly keyDown: Float32Array | null;
  /** [H, keyRank] */
  readonly keyDownBias: Float32Array | null;
  /** [H, keyRank, d] */
  readonly keyUp: Float32Array | null;
  /** [H, d] */
  readonly keyUpBias: Float32Array | null;
  /** [H, d, valueRank] */
  readonly valueDown: Float32Array;
  /** [H, valueRank] */
  readonly valueDownBias: Float32Array;
  /** [H, valueRank, D] */
  readonly valueUp: Float32Array;
  /** [D] */
  readonly valueUpBias: Float32Array;
  readonly lora: LoraModule | null;
}

/** Draws `count` uniform float32 values in [-scale, scale). */
function randomArray(rng: Rng, count: number, scale = 1): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = scale * (2 * rng.nextFloat() - 1);
  return out;
}

function randomModule(rng: Rng, keyRank: number, valueRank: number, lora: LoraSpec | null): InducerModule {
  const H = NUM_HEADS;
  const d = HEAD_DIM;
  const D = MODEL_WIDTH;
  const hasKeyMlp = keyRank >= 2;
  return {
    keyRank,
    valueRank,
    keyDown: hasKeyMlp ? randomArray(rng, H * d * keyRank) : null,
    keyDownBias: hasKeyMlp ? randomArray(rng, H * keyRank) : null,
    keyUp: hasKeyMlp ? randomArray(rng, H * keyRank * d) : null,
    keyUpBias: hasKeyMlp ? randomArray(rng, H * d) : null,
    valueDown: randomArray(rng, H * d * valueRank),
    valueDownBias: randomArray(rng, H * valueRank),
    valueUp: randomArray(rng, H * valueRank * D),
    valueUpBias: randomArray(rng, D),
    lora:
      lora === null
        ? null
        : {
            rank: lora.rank,
            alpha: lora.alpha,
            A: randomArray(rng, lora.rank * D),
            B: randomArray(rng, QUERY_WIDTH * lora.rank),
            bias: lora.bias ? randomArray(rng, QUERY_WIDTH) : null,
          },
  };
}

// ---- padding and stacking into graph inputs ---------------------------------------------

/** Ranks of the graph's parameter inputs. Every module in a batch is zero-padded up to them. */
interface GraphRanks {
  readonly keyRank: number;
  readonly valueRank: number;
  readonly loraRank: number;
}

/** Copies `data` of `shape` into a zero tensor whose `axis` has length `size` (>= the old one). */
function padAxis(data: Float32Array, shape: readonly number[], axis: number, size: number): Float32Array {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const oldSize = shape[axis];
  assert.ok(size >= oldSize, `padAxis: axis ${axis} has ${oldSize} entries, cannot shrink it to ${size}`);
  const out = new Float32Array(outer * size * inner);
  for (let o = 0; o < outer; o++) {
    out.set(data.subarray(o * oldSize * inner, (o + 1) * oldSize * inner), o * size * inner);
  }
  return out;
}

type ParamName = keyof LayerModuleParams;

/** One batch row's parameter tensors, without the batch dimension, at the graph ranks. */
type RowParams = Record<ParamName, Float32Array>;

function padModule(m: InducerModule, ranks: GraphRanks): RowParams {
  const H = NUM_HEADS;
  const d = HEAD_DIM;
  const D = MODEL_WIDTH;
  const rk = ranks.keyRank;
  const rv = ranks.valueRank;
  const r = ranks.loraRank;
  const key =
    m.keyDown && m.keyDownBias && m.keyUp && m.keyUpBias
      ? {
          keyDownWeight: padAxis(m.keyDown, [H, d, m.keyRank], 2, rk),
          keyDownBias: padAxis(m.keyDownBias, [H, m.keyRank], 1, rk),
          keyUpWeight: padAxis(m.keyUp, [H, m.keyRank, d], 1, rk),
          keyUpBias: m.keyUpBias,
        }
      : {
          // No key MLP: zero weights give tanh(0) * 0 + 0 = 0, so the inducer key is q.
          keyDownWeight: new Float32Array(H * d * rk),
          keyDownBias: new Float32Array(H * rk),
          keyUpWeight: new Float32Array(H * rk * d),
          keyUpBias: new Float32Array(H * d),
        };
  const lora =
    m.lora === null
      ? {
          loraA: new Float32Array(r * D),
          loraB: new Float32Array(QUERY_WIDTH * r),
          loraBias: new Float32Array(QUERY_WIDTH),
          loraScale: Float32Array.of(0),
        }
      : {
          loraA: padAxis(m.lora.A, [m.lora.rank, D], 0, r),
          loraB: padAxis(m.lora.B, [QUERY_WIDTH, m.lora.rank], 1, r),
          loraBias: m.lora.bias ?? new Float32Array(QUERY_WIDTH),
          // The scale uses the module's own rank, not the padded one.
          loraScale: Float32Array.of(m.lora.alpha / m.lora.rank),
        };
  return {
    ...key,
    valueDownWeight: padAxis(m.valueDown, [H, d, m.valueRank], 2, rv),
    valueDownBias: padAxis(m.valueDownBias, [H, m.valueRank], 1, rv),
    valueUpWeight: padAxis(m.valueUp, [H, m.valueRank, D], 1, rv),
    valueUpBias: m.valueUpBias,
    ...lora,
  };
}

/** Per-row shapes (without the batch dimension) of the graph's parameter inputs. */
function paramShapes(ranks: GraphRanks): Record<ParamName, number[]> {
  const H = NUM_HEADS;
  const d = HEAD_DIM;
  const D = MODEL_WIDTH;
  return {
    keyDownWeight: [H, d, ranks.keyRank],
    keyDownBias: [H, ranks.keyRank],
    keyUpWeight: [H, ranks.keyRank, d],
    keyUpBias: [H, d],
    valueDownWeight: [H, d, ranks.valueRank],
    valueDownBias: [H, ranks.valueRank],
    valueUpWeight: [H, ranks.valueRank, D],
    valueUpBias: [D],
    loraA: [ranks.loraRank, D],
    loraB: [QUERY_WIDTH, ranks.loraRank],
    loraBias: [QUERY_WIDTH],
    loraScale: [],
  };
}

function concatRows(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, row) => n + row.length, 0));
  let offset = 0;
  for (const row of rows) {
    out.set(row, offset);
    offset += row.length;
  }
  return out;
}

// ---- the graph under test ---------------------------------------------------------------

/** Graph inputs for one run, with q, lse and x flat [B, H, N, d], [B, H, N, 1] and [B, N, D]. */
interface HookInputs {
  readonly modules: readonly InducerModule[];
  readonly ranks: GraphRanks;
  readonly q: Float32Array;
  readonly lse: Float32Array;
  readonly x: Float32Array;
}

/** Graph outputs: lambda [B, H, N, 1], delta [B, N, D], loraDelta [B, N, Dq]. */
interface HookOutputs {
  readonly lambda: Float32Array;
  readonly delta: Float32Array;
  readonly loraDelta: Float32Array;
}

/**
 * Builds the hook graph as the decoder wires it (symbolic batch and query dims, lambda fed into
 * the value path) and serializes it.
 */
function buildHookModel(ranks: GraphRanks): Uint8Array {
  const b = new GraphBuilder('inducer-hook-test');
  const q = b.input('q', 'float32', ['batch', NUM_HEADS, 'queries', HEAD_DIM]);
  const lse = b.input('lse', 'float32', ['batch', NUM_HEADS, 'queries', 1]);
  const x = b.input('x', 'float32', ['batch', 'queries', MODEL_WIDTH]);
  const shapes = paramShapes(ranks);
  const params = Object.fromEntries(
    (Object.keys(shapes) as ParamName[]).map((name) => [name, b.input(name, 'float32', ['batch', ...shapes[name]])]),
  ) as unknown as LayerModuleParams;

  const gate = inducerGate(b, q, lse, params, HEAD_DIM);
  b.output(gate, 'lambda');
  b.output(inducerValue(b, q, gate, params), 'delta');
  b.output(loraQueryDelta(b, x, params), 'lora_delta');
  return serializeModel(b.build()).model;
}

async function runHook(inputs: HookInputs): Promise<HookOutputs> {
  const B = inputs.modules.length;
  const N = NUM_QUERIES;
  const session = await ort.InferenceSession.create(buildHookModel(inputs.ranks));

  const feeds: Record<string, ort.Tensor> = {
    q: new ort.Tensor('float32', inputs.q, [B, NUM_HEADS, N, HEAD_DIM]),
    lse: new ort.Tensor('float32', inputs.lse, [B, NUM_HEADS, N, 1]),
    x: new ort.Tensor('float32', inputs.x, [B, N, MODEL_WIDTH]),
  };
  const rows = inputs.modules.map((m) => padModule(m, inputs.ranks));
  const shapes = paramShapes(inputs.ranks);
  for (const name of Object.keys(shapes) as ParamName[]) {
    feeds[name] = new ort.Tensor('float32', concatRows(rows.map((row) => row[name])), [B, ...shapes[name]]);
  }

  const out = await session.run(feeds);
  await session.release();
  assert.deepEqual(out.lambda.dims, [B, NUM_HEADS, N, 1]);
  assert.deepEqual(out.delta.dims, [B, N, MODEL_WIDTH]);
  assert.deepEqual(out.lora_delta.dims, [B, N, QUERY_WIDTH]);
  return {
    lambda: out.lambda.data as Float32Array,
    delta: out.delta.data as Float32Array,
    loraDelta: out.lora_delta.data as Float32Array,
  };
}

// ---- queries, masked scores and the reference ------------------------------------------

/** One batch row's attention inputs: q [H][N][d] and the scaled, masked logits [H][N][M]. */
interface AttentionRow {
  readonly q: number[][][];
  readonly scores: number[][][];
}

/**
 * Generates random queries and logits for B rows. Query i attends to keys j <= T + i (causal
 * with T cached keys), and odd rows also mask key 0, as a left-padded prompt would.
 */
function randomAttention(rng: Rng, B: number): AttentionRow[] {
  const rows: AttentionRow[] = [];
  for (let b = 0; b < B; b++) {
    const q: number[][][] = [];
    const scores: number[][][] = [];
    for (let h = 0; h < NUM_HEADS; h++) {
      q.push(Array.from({ length: NUM_QUERIES }, () => Array.from(randomArray(rng, HEAD_DIM))));
      const headScores: number[][] = [];
      for (let i = 0; i < NUM_QUERIES; i++) {
        const logits = Array.from(randomArray(rng, NUM_KEYS, 2));
        headScores.push(logits.map((s, j) => (j > NUM_PAST + i || (b % 2 === 1 && j === 0) ? -Infinity : s)));
      }
      scores.push(headScores);
    }
    rows.push({ q, scores });
  }
  return rows;
}

/** Computes the log-sum-exp over the visible (finite) logits of one query row. */
function logSumExpVisible(logits: readonly number[]): number {
  const visible = logits.filter((s) => Number.isFinite(s));
  assert.ok(visible.length > 0, 'every query row must see at least one key');
  const max = Math.max(...visible);
  return max + Math.log(visible.reduce((sum, s) => sum + Math.exp(s - max), 0));
}

function flattenQ(rows: readonly AttentionRow[]): Float32Array {
  return Float32Array.from(rows.flatMap((row) => row.q.flat(2)));
}

function flattenLse(rows: readonly AttentionRow[]): Float32Array {
  return Float32Array.from(rows.flatMap((row) => row.scores.flatMap((head) => head.map(logSumExpVisible))));
}

function randomX(rng: Rng, B: number): number[][][] {
  return Array.from({ length: B }, () =>
    Array.from({ length: NUM_QUERIES }, () => Array.from(randomArray(rng, MODEL_WIDTH))),
  );
}

function naiveForRow(m: InducerModule, row: AttentionRow): { lambda: number[][]; delta: number[][] } {
  return naiveInducer(row.q, row.scores, {
    keyDown: m.keyDown ?? undefined,
    keyDownBias: m.keyDownBias ?? undefined,
    keyUp: m.keyUp ?? undefined,
    keyUpBias: m.keyUpBias ?? undefined,
    valueDown: m.valueDown,
    valueDownBias: m.valueDownBias,
    valueUp: m.valueUp,
    valueUpBias: m.valueUpBias,
    keyRank: m.keyRank,
    valueRank: m.valueRank,
  });
}

/** Computes the reference LoRA-Q correction of one row, [N][Dq], which is zero without LoRA. */
function naiveLoraForRow(m: InducerModule, x: readonly (readonly number[])[]): number[][] {
  if (m.lora === null) return x.map(() => new Array<number>(QUERY_WIDTH).fill(0));
  return naiveLoraQ(x, m.lora.A, m.lora.B, m.lora.bias, m.lora.alpha, m.lora.rank);
}

// ---- comparisons ------------------------------------------------------------------------

function assertAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: ${actual.length} values, expected ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    assert.ok(error <= tolerance, `${label}[${i}] = ${actual[i]}, expected ${expected[i]} (error ${error} > ${tolerance})`);
  }
}

/** Checks lambda, delta and the LoRA correction of every row against the naive reference. */
function assertMatchesReference(
  out: HookOutputs,
  modules: readonly InducerModule[],
  attention: readonly AttentionRow[],
  x: readonly number[][][],
): void {
  const lambda = modules.flatMap((m, b) => naiveForRow(m, attention[b]).lambda.flat());
  const delta = modules.flatMap((m, b) => naiveForRow(m, attention[b]).delta.flat());
  const loraDelta = modules.flatMap((m, b) => naiveLoraForRow(m, x[b]).flat());
  assertAllClose(out.lambda, lambda, TOLERANCE, 'lambda');
  assertAllClose(out.delta, delta, TOLERANCE, 'delta');
  assertAllClose(out.loraDelta, loraDelta, TOLERANCE, 'lora_delta');
}

// ---- tests ------------------------------------------------------------------------------

describe('inducerGate', () => {
  it('matches the reference with a rank-3 key MLP', async () => {
    const rng = createRng(101);
    const modules = [randomModule(rng, 3, 2, null), randomModule(rng, 3, 2, null)];
    const attention = randomAttention(rng, 2);
    const x = randomX(rng, 2);
    const out = await runHook({
      modules,
      ranks: { keyRank: 3, valueRank: 2, loraRank: 1 },
      q: flattenQ(attention),
      lse: flattenLse(attention),
      x: Float32Array.from(x.flat(2)),
    });

    const expected = modules.flatMap((m, b) => naiveForRow(m, attention[b]).lambda.flat());
    assertAllClose(out.lambda, expected, TOLERANCE, 'lambda');

    // The key MLP must move lambda by far more than the tolerance, or the check above could
    // pass for a graph that ignores it.
    const withoutKeyMlp = modules.flatMap((m, b) => naiveForRow({ ...m, keyRank: 1 }, attention[b]).lambda.flat());
    const maxShift = Math.max(...expected.map((v, i) => Math.abs(v - withoutKeyMlp[i])));
    assert.ok(maxShift > 1e-2, `the key MLP shifts lambda by only ${maxShift}`);
  });

  it('uses the query as key at key rank 1', async () => {
    const rng = createRng(102);
    const modules = [randomModule(rng, 1, 2, null), randomModule(rng, 1, 2, null)];
    const attention = randomAttention(rng, 2);
    const x = randomX(rng, 2);
    const out = await runHook({
      modules,
      ranks: { keyRank: 1, valueRank: 2, loraRank: 1 },
      q: flattenQ(attention),
      lse: flattenLse(attention),
      x: Float32Array.from(x.flat(2)),
    });

    const expected = modules.flatMap((m, b) => naiveForRow(m, attention[b]).lambda.flat());
    assertAllClose(out.lambda, expected, TOLERANCE, 'lambda');
  });

  it('ignores masked keys in the denominator', async () => {
    // randomAttention masks keys for the first two queries of every row and for all queries of odd
    // rows, so lambda over the visible keys must differ from lambda over all M logits.
    const rng = createRng(103);
    const modules = [randomModule(rng, 3, 2, null), randomModule(rng, 3, 2, null)];
    const attention = randomAttention(rng, 2);
    const unmasked = attention.map((row) => ({
      q: row.q,
      scores: row.scores.map((head) => head.map((logits) => logits.map((s) => (Number.isFinite(s) ? s : 1)))),
    }));
    const x = randomX(rng, 2);
    const out = await runHook({
      modules,
      ranks: { keyRank: 3, valueRank: 2, loraRank: 1 },
      q: flattenQ(attention),
      lse: flattenLse(attention),
      x: Float32Array.from(x.flat(2)),
    });

    const expected = modules.flatMap((m, b) => naiveForRow(m, attention[b]).lambda.flat());
    const allKeys = modules.flatMap((m, b) => naiveForRow(m, unmasked[b]).lambda.flat());
    assertAllClose(out.lambda, expected, TOLERANCE, 'lambda');
    const maxShift = Math.max(...expected.map((v, i) => Math.abs(v - allKeys[i])));
    assert.ok(maxShift > 1e-2, `masking shifts lambda by only ${maxShift}`);
  });
});

describe('inducerValue', () => {
  for (const valueRank of [2, 3]) {
    it(`matches the reference at value rank ${valueRank}`, async () => {
      const rng = createRng(200 + valueRank);
      const modules = [randomModule(rng, 3, valueRank, null), randomModule(rng, 1, valueRank, null)];
      const attention = randomAttention(rng, 2);
      const x = randomX(rng, 2);
      const out = await runHook({
        modules,
        ranks: { keyRank: 3, valueRank, loraRank: 1 },
        q: flattenQ(attention),
        lse: flattenLse(attention),
        x: Float32Array.from(x.flat(2)),
      });

      const expected = modules.flatMap((m, b) => naiveForRow(m, attention[b]).delta.flat());
      assertAllClose(out.delta, expected, TOLERANCE, 'delta');
    });
  }
});

describe('loraQueryDelta', () => {
  const cases: { name: string; specs: [LoraSpec, LoraSpec] }[] = [
    {
      name: 'with bias',
      specs: [
        { rank: 3, alpha: 8, bias: true },
        { rank: 3, alpha: 1, bias: true },
      ],
    },
    {
      name: 'without bias',
      specs: [
        { rank: 3, alpha: 16, bias: false },
        { rank: 3, alpha: 2, bias: false },
      ],
    },
    {
      name: 'mixing bias and no bias',
      specs: [
        { rank: 3, alpha: 6, bias: true },
        { rank: 3, alpha: 0.5, bias: false },
      ],
    },
  ];
  for (const { name, specs } of cases) {
    it(`matches the reference ${name}`, async () => {
      const rng = createRng(300 + cases.findIndex((c) => c.name === name));
      const modules = specs.map((spec) => randomModule(rng, 1, 2, spec));
      const attention = randomAttention(rng, 2);
      const x = randomX(rng, 2);
      const out = await runHook({
        modules,
        ranks: { keyRank: 1, valueRank: 2, loraRank: 3 },
        q: flattenQ(attention),
        lse: flattenLse(attention),
        x: Float32Array.from(x.flat(2)),
      });

      const expected = modules.flatMap((m, b) => naiveLoraForRow(m, x[b]).flat());
      assertAllClose(out.loraDelta, expected, TOLERANCE, 'lora_delta');
    });
  }
});

describe('rank padding', () => {
  it('zero units leave every output unchanged', async () => {
    const rng = createRng(401);
    const modules = [
      randomModule(rng, 3, 2, { rank: 2, alpha: 4, bias: true }),
      randomModule(rng, 2, 3, { rank: 1, alpha: 3, bias: false }),
    ];
    const attention = randomAttention(rng, 2);
    const x = randomX(rng, 2);
    const inputs = {
      modules,
      q: flattenQ(attention),
      lse: flattenLse(attention),
      x: Float32Array.from(x.flat(2)),
    };
    const tight = await runHook({ ...inputs, ranks: { keyRank: 3, valueRank: 3, loraRank: 2 } });
    const padded = await runHook({ ...inputs, ranks: { keyRank: 6, valueRank: 5, loraRank: 4 } });

    assertAllClose(padded.lambda, tight.lambda, PADDING_TOLERANCE, 'padded lambda');
    assertAllClose(padded.delta, tight.delta, PADDING_TOLERANCE, 'padded delta');
    assertAllClose(padded.loraDelta, tight.loraDelta, PADDING_TOLERANCE, 'padded lora_delta');
    assertMatchesReference(padded, modules, attention, x);
  });

  it('mixed-rank batch equals each module alone', async () => {
    // Row 0: key MLP, LoRA with bias. Row 1: no key MLP (rank 1) and no LoRA, padded up to row 0.
    const rng = createRng(402);
    const modules = [randomModule(rng, 4, 3, { rank: 3, alpha: 6, bias: true }), randomModule(rng, 1, 1, null)];
    const attention = randomAttention(rng, 2);
    const x = randomX(rng, 2);
    const batch = await runHook({
      modules,
      ranks: { keyRank: 4, valueRank: 3, loraRank: 3 },
      q: flattenQ(attention),
      lse: flattenLse(attention),
      x: Float32Array.from(x.flat(2)),
    });
    assertMatchesReference(batch, modules, attention, x);

    const ownRanks: GraphRanks[] = [
      { keyRank: 4, valueRank: 3, loraRank: 3 },
      { keyRank: 1, valueRank: 1, loraRank: 1 },
    ];
    const lambdaSize = NUM_HEADS * NUM_QUERIES;
    const deltaSize = NUM_QUERIES * MODEL_WIDTH;
    const loraSize = NUM_QUERIES * QUERY_WIDTH;
    for (let b = 0; b < modules.length; b++) {
      const alone = await runHook({
        modules: [modules[b]],
        ranks: ownRanks[b],
        q: flattenQ([attention[b]]),
        lse: flattenLse([attention[b]]),
        x: Float32Array.from(x[b].flat()),
      });
      const row = (data: Float32Array, size: number): Float32Array => data.subarray(b * size, (b + 1) * size);
      assertAllClose(row(batch.lambda, lambdaSize), alone.lambda, PADDING_TOLERANCE, `row ${b} lambda`);
      assertAllClose(row(batch.delta, deltaSize), alone.delta, PADDING_TOLERANCE, `row ${b} delta`);
      assertAllClose(row(batch.loraDelta, loraSize), alone.loraDelta, PADDING_TOLERANCE, `row ${b} lora_delta`);
    }
  });
});
