import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { BatchState, BatchStateError, planPrefill } from '../../src/runtime/batch-state.js';
import type { KvCache } from '../../src/runtime/engine.js';

const NUM_LAYERS = 2;
const NUM_HEADS = 2;
const HEAD_DIM = 3;

/** A row of a test cache: its tag and its mask; value = tag*1000 + layer*100 + head*10 + token + dim/10 for real tokens. */
interface TestRow {
  readonly tag: number;
  readonly mask: readonly number[];
}

/** Value of real token `token` (counted within the row), or 0 for padding; `kind` 1 for values so keys and values differ. */
function expectedValue(tag: number, kind: number, layer: number, head: number, token: number, dim: number): number {
  return tag * 1000 + kind * 500 + layer * 100 + head * 10 + token + dim / 10;
}

/** Builds a cache whose every entry encodes its row, layer, head, token and dim (padding columns are 0). */
function makeCache(rows: readonly TestRow[]): KvCache {
  const length = rows[0].mask.length;
  const build = (kind: number, layer: number): ort.Tensor => {
    const data = new Float32Array(rows.length * NUM_HEADS * length * HEAD_DIM);
    rows.forEach((row, b) => {
      const padding = row.mask.indexOf(1);
      for (let h = 0; h < NUM_HEADS; h++) {
        for (let c = padding; c < length; c++) {
          for (let d = 0; d < HEAD_DIM; d++) {
            data[((b * NUM_HEADS + h) * length + c) * HEAD_DIM + d] = expectedValue(row.tag, kind, layer, h, c - padding, d);
          }
        }
      }
    });
    return new ort.Tensor('float32', data, [rows.length, NUM_HEADS, length, HEAD_DIM]);
  };
  return {
    keys: Array.from({ length: NUM_LAYERS }, (_, layer) => build(0, layer)),
    values: Array.from({ length: NUM_LAYERS }, (_, layer) => build(1, layer)),
    batchSize: rows.length,
    length,
  };
}

/** Checks every entry of `cache` against the encoding of `tags` with the batch's current masks. */
function assertCacheMatches(batch: BatchState, tags: readonly number[]): void {
  const cache = batch.cache as KvCache;
  assert.equal(cache.batchSize, tags.length);
  for (let layer = 0; layer < NUM_LAYERS; layer++) {
    for (const [kind, tensor] of [
      [0, cache.keys[layer]],
      [1, cache.values[layer]],
    ] as const) {
      assert.deepEqual(tensor.dims, [tags.length, NUM_HEADS, cache.length, HEAD_DIM]);
      const data = tensor.data as Float32Array;
      batch.rows.forEach((row, b) => {
        assert.equal(row.mask.length, cache.length, `row ${row.jobId} mask covers the cache`);
        const padding = row.mask.indexOf(1);
        for (let h = 0; h < NUM_HEADS; h++) {
          for (let c = 0; c < cache.length; c++) {
            for (let d = 0; d < HEAD_DIM; d++) {
              const got = data[((b * NUM_HEADS + h) * cache.length + c) * HEAD_DIM + d];
              const want = c < padding ? 0 : Math.fround(expectedValue(tags[b], kind, layer, h, c - padding, d));
              assert.equal(got, want, `row ${row.jobId} layer ${layer} kind ${kind} head ${h} column ${c} dim ${d}`);
            }
          }
        }
      });
    }
  }
}

describe('planPrefill', () => {
  it('left-pads prompts with their own positions', () => {
    const plan = planPrefill([
      { promptIds: [5, 6, 7], slotId: 1, allLogits: false },
      { promptIds: [8, 9], slotId: 0, allLogits: true },
    ]);
    assert.deepEqual(plan.input.inputIds, [
      [5, 6, 7],
      [0, 8, 9],
    ]);
    assert.deepEqual(plan.input.positionIds, [
      [0, 1, 2],
      [0, 0, 1],
    ]);
    assert.deepEqual(plan.input.attentionMask, [
      [1, 1, 1],
      [0, 1, 1],
    ]);
    assert.deepEqual(plan.input.slotIds, [1, 0]);
    assert.equal(plan.input.past, null);
    // Row 0: last column of row 0 (flat 2). Row 1: its two real columns (flat 4 and 5).
    assert.deepEqual(plan.input.logitsIndices, [2, 4, 5]);
    assert.deepEqual(plan.logitsRows, [
      { first: 0, count: 1 },
      { first: 1, count: 2 },
    ]);
  });

  it('rejects an empty prompt', () => {
    assert.throws(() => planPrefill([{ promptIds: [], slotId: 0, allLogits: false }]), BatchStateError);
    assert.throws(() => planPrefill([]), BatchStateError);
  });
});

describe('BatchState', () => {
  it('takes the first prefill as it is', () => {
    const batch = new BatchState();
    const rows = [
      { tag: 1, mask: [0, 1, 1] },
      { tag: 2, mask: [1, 1, 1] },
    ];
    batch.merge(
      rows.map((r, i) => ({ jobId: `j${r.tag}`, mask: [...r.mask], nextPosition: [2, 3][i] })),
      makeCache(rows),
    );
    assert.equal(batch.size, 2);
    assert.equal(batch.length, 3);
    assertCacheMatches(batch, [1, 2]);
  });

  it('trims columns that are padding in every row', () => {
    const batch = new BatchState();
    const rows = [
      { tag: 1, mask: [0, 0, 1, 1] },
      { tag: 2, mask: [0, 1, 1, 1] },
    ];
    batch.merge(
      rows.map((r) => ({ jobId: `j${r.tag}`, mask: [...r.mask], nextPosition: 0 })),
      makeCache(rows),
    );
    assert.equal(batch.length, 3);
    assert.deepEqual(
      batch.rows.map((r) => r.mask),
      [
        [0, 1, 1],
        [1, 1, 1],
      ],
    );
    assertCacheMatches(batch, [1, 2]);
  });

  it('merges new rows by left-padding the shorter part', () => {
    const batch = new BatchState();
    const running = [
      { tag: 1, mask: [0, 1, 1] },
      { tag: 2, mask: [1, 1, 1] },
    ];
    batch.merge(
      running.map((r) => ({ jobId: `j${r.tag}`, mask: [...r.mask], nextPosition: 0 })),
      makeCache(running),
    );
    const incoming = [
      { tag: 3, mask: [1, 1, 1, 1, 1] },
      { tag: 4, mask: [0, 0, 0, 1, 1] },
    ];
    batch.merge(
      incoming.map((r) => ({ jobId: `j${r.tag}`, mask: [...r.mask], nextPosition: 0 })),
      makeCache(incoming),
    );
    assert.equal(batch.length, 5);
    assert.deepEqual(
      batch.rows.map((r) => r.jobId),
      ['j1', 'j2', 'j3', 'j4'],
    );
    assert.deepEqual(
      batch.rows.map((r) => r.mask),
      [
        [0, 0, 0, 1, 1],
        [0, 0, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1],
      ],
    );
    assertCacheMatches(batch, [1, 2, 3, 4]);

    // A shorter prefill is padded instead of the batch.
    const short = [{ tag: 5, mask: [1] }];
    batch.merge([{ jobId: 'j5', mask: [1], nextPosition: 0 }], makeCache(short));
    assert.equal(batch.length, 5);
    assert.deepEqual(batch.rows[4].mask, [0, 0, 0, 0, 1]);
    assertCacheMatches(batch, [1, 2, 3, 4, 5]);
  });

  it('removes rows and the padding they leave behind', () => {
    const batch = new BatchState();
    const rows = [
      { tag: 1, mask: [0, 0, 0, 1, 1] },
      { tag: 2, mask: [1, 1, 1, 1, 1] },
      { tag: 3, mask: [0, 0, 1, 1, 1] },
    ];
    batch.merge(
      rows.map((r) => ({ jobId: `j${r.tag}`, mask: [...r.mask], nextPosition: 0 })),
      makeCache(rows),
    );
    batch.keepRows(new Set(['j1', 'j3']));
    assert.deepEqual(
      batch.rows.map((r) => r.jobId),
      ['j1', 'j3'],
    );
    assert.equal(batch.length, 3, 'two leading columns were padding in both remaining rows');
    assert.deepEqual(
      batch.rows.map((r) => r.mask),
      [
        [0, 1, 1],
        [1, 1, 1],
      ],
    );
    assertCacheMatches(batch, [1, 3]);

    batch.keepRows(new Set());
    assert.equal(batch.size, 0);
    assert.equal(batch.cache, null);
    assert.equal(batch.length, 0);
  });

  it('builds decode inputs and appends a step', () => {
    const batch = new BatchState();
    const rows = [
      { tag: 1, mask: [0, 1, 1] },
      { tag: 2, mask: [1, 1, 1] },
    ];
    batch.merge(
      [
        { jobId: 'j1', mask: [0, 1, 1], nextPosition: 2 },
        { jobId: 'j2', mask: [1, 1, 1], nextPosition: 3 },
      ],
      makeCache(rows),
    );
    const input = batch.decodeInput([40, 41], [0, 2]);
    assert.deepEqual(input.inputIds, [[40], [41]]);
    assert.deepEqual(input.positionIds, [[2], [3]]);
    assert.deepEqual(input.attentionMask, [
      [0, 1, 1, 1],
      [1, 1, 1, 1],
    ]);
    assert.deepEqual(input.logitsIndices, [0, 1]);
    assert.deepEqual(input.slotIds, [0, 2]);
    assert.equal(input.past, batch.cache);

    const present = makeCache([
      { tag: 1, mask: [0, 1, 1, 1] },
      { tag: 2, mask: [1, 1, 1, 1] },
    ]);
    batch.appendStep(present);
    assert.equal(batch.length, 4);
    assert.deepEqual(
      batch.rows.map((r) => r.nextPosition),
      [3, 4],
    );
    assert.deepEqual(batch.rows[0].mask, [0, 1, 1, 1]);
    assert.throws(() => batch.appendStep(present), BatchStateError, 'a step must add exactly one column');
    assert.throws(() => batch.decodeInput([1], [0]), BatchStateError);
  });

  it('rejects rows that do not match the cache', () => {
    const batch = new BatchState();
    const cache = makeCache([{ tag: 1, mask: [1, 1] }]);
    assert.throws(() => batch.merge([{ jobId: 'j1', mask: [1, 1, 1], nextPosition: 3 }], cache), BatchStateError);
    assert.throws(() => batch.merge([], cache), BatchStateError);
    assert.throws(() => new BatchState().decodeInput([], []), BatchStateError);
  });
});
