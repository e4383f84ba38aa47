/**
 * Comparisons shared by the tests that check the ONNX graphs against the naive reference.
 */
import assert from 'node:assert/strict';
import type { ModelConfig } from '../../src/model/config.js';
import type { HostTensor } from '../../src/model/tensor.js';
import type { SlotModule } from '../../src/runtime/slot-table.js';
import { naiveLogprobs } from '../reference/naive-decoder.js';

/** Returns the largest absolute elementwise difference; the arrays must have equal length. */
export function maxAbsDifference(a: readonly number[], b: readonly number[]): number {
  assert.equal(a.length, b.length, 'compared arrays differ in length');
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Computes log p(ids[i+1] | ids[..i]) with the naive reference. */
export function referenceScores(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, ids: number[], module: SlotModule | null): number[] {
  const rows = naiveLogprobs(config, weights, ids, module);
  return ids.slice(1).map((next, i) => rows[i][next]);
}
