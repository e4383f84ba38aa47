import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  LogitsError,
  logSoftmax,
  Sampler,
  SamplingParamsError,
  topKIndices,
  topLogprobs,
  validateSamplingParams,
} from '../../src/runtime/sampler.js';
import type { SamplingParams } from '../../src/runtime/sampler.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: null };

/** Deterministic test data from a linear congruential generator, independent of the module's RNG. */
function makeLcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function randomLogits(length: number, seed: number, scale = 4): Float32Array {
  const random = makeLcg(seed);
  return Float32Array.from({ length }, () => (random() * 2 - 1) * scale);
}

/** Ids of all entries above -Infinity sorted by (value descending, id ascending), with a comparator sort. */
function naiveRanking(values: Float32Array): number[] {
  const ids = [...values.keys()].filter((i) => values[i] > Number.NEGATIVE_INFINITY);
  return ids.sort((a, b) => (values[a] === values[b] ? a - b : values[b] - values[a]));
}

function naiveLogSoftmax(values: Float32Array): number[] {
  const max = Math.max(...values);
  const sum = [...values].reduce((total, v) => total + Math.exp(v - max), 0);
  return [...values].map((v) => v - max - Math.log(sum));
}

/** Draws `numDraws` tokens and returns how often each id came up. */
function drawFrequencies(params: SamplingParams, logits: Float32Array, numDraws: number): number[] {
  const sampler = new Sampler(params);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < numDraws; i++) counts[sampler.sample(logits).tokenId]++;
  return counts.map((count) => count / numDraws);
}

/**
 * Asserts that each empirical frequency is within 5 standard errors, sqrt(p (1 - p) / n), of the
 * expected probability. A token with probability 0 must never be drawn.
 */
function assertFrequencies(frequencies: number[], expected: number[], numDraws: number): void {
  assert.equal(frequencies.length, expected.length);
  for (const [tokenId, probability] of expected.entries()) {
    const frequency = frequencies[tokenId];
    if (probability === 0) {
      assert.equal(frequency, 0, `token ${tokenId} must be filtered out`);
      continue;
    }
    const tolerance = 5 * Math.sqrt((probability * (1 - probability)) / numDraws);
    assert.ok(
      Math.abs(frequency - probability) <= tolerance,
      `token ${tokenId}: frequency ${frequency} vs probability ${probability} (tolerance ${tolerance})`,
    );
  }
}

describe('validateSamplingParams', () => {
  it('accepts valid settings', () => {
    validateSamplingParams(GREEDY);
    validateSamplingParams({ temperature: 1.5, topK: 40, topP: 0.95, seed: 0 });
    validateSamplingParams({ temperature: 0.7, topK: 0, topP: 1, seed: Number.MAX_SAFE_INTEGER });
  });

  const invalidCases: [string, Partial<SamplingParams>][] = [
    ['temperature', { temperature: -0.1 }],
    ['temperature', { temperature: Number.NaN }],
    ['temperature', { temperature: Number.POSITIVE_INFINITY }],
    ['topK', { topK: -1 }],
    ['topK', { topK: 2.5 }],
    ['topP', { topP: 0 }],
    ['topP', { topP: 1.01 }],
    ['topP', { topP: Number.NaN }],
    ['seed', { seed: -1 }],
    ['seed', { seed: 1.5 }],
    ['seed', { seed: 2 ** 53 }],
  ];
  for (const [field, override] of invalidCases) {
    const value = Object.values(override)[0];
    it(`rejects ${field}=${value}`, () => {
      assert.throws(
        () => validateSamplingParams({ ...GREEDY, ...override }),
        (error: unknown) => {
          assert.ok(error instanceof SamplingParamsError);
          assert.equal(error.field, field);
          assert.match(error.message, new RegExp(`${field}=${String(value)}`));
          assert.match(error.message, /expected/);
          return true;
        },
      );
    });
  }

  it('rejects invalid settings in the Sampler constructor', () => {
    assert.throws(() => new Sampler({ ...GREEDY, topP: 2 }), SamplingParamsError);
  });
});

describe('logSoftmax', () => {
  it('matches a naive computation', () => {
    const logits = randomLogits(50, 1);
    const expected = naiveLogSoftmax(logits);
    const actual = logSoftmax(logits);
    for (let i = 0; i < logits.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) < 1e-12, `token ${i}`);
  });

  it('stays finite for large logits', () => {
    const actual = logSoftmax(new Float32Array([1000, 1001]));
    // log-softmax of [0, 1] shifted by a constant: -log(1 + e) and -log(1 + 1/e).
    assert.ok(Math.abs(actual[0] + Math.log(1 + Math.E)) < 1e-12);
    assert.ok(Math.abs(actual[1] + Math.log(1 + 1 / Math.E)) < 1e-12);
  });

  it('maps -Infinity to -Infinity', () => {
    const actual = logSoftmax(new Float32Array([0, Number.NEGATIVE_INFINITY, 0]));
    assert.ok(Math.abs(actual[0] - Math.log(0.5)) < 1e-15);
    assert.equal(actual[1], Number.NEGATIVE_INFINITY);
  });

  it('rejects rows without a distribution', () => {
    assert.throws(() => logSoftmax(new Float32Array(0)), LogitsError);
    assert.throws(() => logSoftmax(new Float32Array([1, Number.NaN])), /token 1 has logit NaN/);
    assert.throws(() => logSoftmax(new Float32Array([1, Number.POSITIVE_INFINITY])), /\+Infinity/);
    assert.throws(() => logSoftmax(new Float32Array([Number.NEGATIVE_INFINITY])), /all 1 logits are -Infinity/);
  });
});

describe('topKIndices', () => {
  it('matches a comparator sort on the heap and radix paths', () => {
    // Values rounded to a coarse grid so that many ties occur; some entries are -Infinity.
    const random = makeLcg(7);
    const values = Float32Array.from({ length: 3000 }, () => {
      const r = random();
      if (r < 0.05) return Number.NEGATIVE_INFINITY;
      if (r < 0.1) return r < 0.075 ? -0 : 0;
      return Math.round((r * 2 - 1) * 20) / 4;
    });
    const ranking = naiveRanking(values);
    for (const k of [1, 2, 17, 100, 374, 375, 376, 1000, 2849, 2850, 3000, 5000]) {
      assert.deepEqual([...topKIndices(values, k)], ranking.slice(0, k), `k=${k}`);
    }
  });

  it('orders negative and positive values', () => {
    const values = new Float32Array([-1.5, 2, -0.25, 0, 3.5, -7, 2]);
    // Expected by hand: 3.5 (4), 2 (1), 2 (6), 0 (3), -0.25 (2), -1.5 (0), -7 (5).
    assert.deepEqual([...topKIndices(values, 7)], [4, 1, 6, 3, 2, 0, 5]);
    assert.deepEqual([...topKIndices(values, 3)], [4, 1, 6]);
  });

  it('returns nothing for k = 0', () => {
    assert.equal(topKIndices(new Float32Array([1, 2]), 0).length, 0);
  });
});

describe('topLogprobs', () => {
  it('matches naive log-softmax and ranking', () => {
    const logits = randomLogits(200, 3);
    logits[10] = logits[20];
    const expectedLogprobs = naiveLogSoftmax(logits);
    const ranking = naiveRanking(logits);
    const actual = topLogprobs(logits, 5);
    assert.equal(actual.length, 5);
    for (const [rank, entry] of actual.entries()) {
      assert.equal(entry.tokenId, ranking[rank]);
      assert.ok(Math.abs(entry.logprob - expectedLogprobs[ranking[rank]]) < 1e-12);
    }
  });

  it('lists ties lowest id first and leaves out -Infinity', () => {
    const actual = topLogprobs(new Float32Array([0, Number.NEGATIVE_INFINITY, 0, Math.log(2)]), 10);
    // Probabilities 1/4, 0, 1/4, 1/2.
    assert.deepEqual(
      actual.map((entry) => entry.tokenId),
      [3, 0, 2],
    );
    assert.ok(Math.abs(actual[0].logprob - Math.log(0.5)) < 1e-7);
    assert.ok(Math.abs(actual[1].logprob - Math.log(0.25)) < 1e-7);
  });

  it('rejects a negative count', () => {
    assert.throws(() => topLogprobs(new Float32Array([1]), -1), SamplingParamsError);
  });
});

describe('Sampler greedy', () => {
  it('picks the argmax with its logprob', () => {
    const logits = new Float32Array([0.5, 2, -1, 1.5]);
    const token = new Sampler(GREEDY).sample(logits);
    assert.equal(token.tokenId, 1);
    const expected = 2 - Math.log(Math.exp(0.5) + Math.exp(2) + Math.exp(-1) + Math.exp(1.5));
    assert.ok(Math.abs(token.logprob - expected) < 1e-12);
  });

  it('breaks ties by lowest id', () => {
    const token = new Sampler(GREEDY).sample(new Float32Array([1, 3, 0, 3]));
    assert.equal(token.tokenId, 1);
  });

  it('equals topK = 1 at any temperature', () => {
    for (let seed = 0; seed < 20; seed++) {
      const logits = randomLogits(5000, 100 + seed);
      const naiveArgmax = naiveRanking(logits)[0];
      assert.equal(new Sampler(GREEDY).sample(logits).tokenId, naiveArgmax);
      const topOne = new Sampler({ temperature: 1.3, topK: 1, topP: 1, seed });
      assert.equal(topOne.sample(logits).tokenId, naiveArgmax, `logits seed ${seed}`);
    }
  });

  it('treats a subnormal temperature as greedy', () => {
    const logits = new Float32Array([0.5, 2, -1, 2]);
    const sampler = new Sampler({ temperature: 1e-320, topK: 0, topP: 1, seed: 1 });
    for (let i = 0; i < 20; i++) assert.equal(sampler.sample(logits).tokenId, 1);
  });

  it('rejects NaN logits', () => {
    assert.throws(() => new Sampler(GREEDY).sample(new Float32Array([0, Number.NaN])), LogitsError);
  });
});

describe('Sampler draw frequencies', () => {
  const numDraws = 40_000;
  // exp(logits) = 1, 4, 9, 16, 25.
  const squares = Float32Array.from([1, 4, 9, 16, 25], Math.log);

  it('follows the softmax at temperature 1', () => {
    const logits = Float32Array.from([1, 2, 3, 4], Math.log);
    const frequencies = drawFrequencies({ temperature: 1, topK: 0, topP: 1, seed: 1 }, logits, numDraws);
    assertFrequencies(frequencies, [0.1, 0.2, 0.3, 0.4], numDraws);
  });

  it('divides logits by the temperature', () => {
    // Temperature 2 takes square roots of exp(logits): weights 1, 2, 3, 4, 5 out of 15.
    const frequencies = drawFrequencies({ temperature: 2, topK: 0, topP: 1, seed: 2 }, squares, numDraws);
    assertFrequencies(frequencies, [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15], numDraws);
  });

  it('keeps the top k and renormalises', () => {
    // Top 2 of weights 1, 4, 9, 16, 25 are ids 4 and 3: 25/41 and 16/41.
    const frequencies = drawFrequencies({ temperature: 1, topK: 2, topP: 1, seed: 3 }, squares, numDraws);
    assertFrequencies(frequencies, [0, 0, 0, 16 / 41, 25 / 41], numDraws);
  });

  it('keeps the smallest nucleus reaching top_p', () => {
    // Probabilities 0.1, 0.2, 0.3, 0.4. Ids 3 and 2 have 0.7 >= 0.6.
    const logits = Float32Array.from([1, 2, 3, 4], Math.log);
    const frequencies = drawFrequencies({ temperature: 1, topK: 0, topP: 0.6, seed: 4 }, logits, numDraws);
    assertFrequencies(frequencies, [0, 0, 3 / 7, 4 / 7], numDraws);

    // 0.7 < 0.75, so id 1 joins: 0.9 in total.
    const wider = drawFrequencies({ temperature: 1, topK: 0, topP: 0.75, seed: 5 }, logits, numDraws);
    assertFrequencies(wider, [0, 2 / 9, 3 / 9, 4 / 9], numDraws);
  });

  it('keeps the top token when top_p is tiny', () => {
    const logits = Float32Array.from([1, 2, 3, 4], Math.log);
    const frequencies = drawFrequencies({ temperature: 1, topK: 0, topP: 0.01, seed: 6 }, logits, 1000);
    assert.deepEqual(frequencies, [0, 0, 0, 1]);
  });

  it('keeps an exact top_p boundary', () => {
    // Probabilities 0.5, 0.3, 0.2 with top_p 0.8: ids 0 and 1 reach it exactly, so id 2 is dropped.
    const logits = Float32Array.from([0.5, 0.3, 0.2], Math.log);
    const frequencies = drawFrequencies({ temperature: 1, topK: 0, topP: 0.8, seed: 7 }, logits, numDraws);
    assertFrequencies(frequencies, [5 / 8, 3 / 8, 0], numDraws);
  });

  it('applies temperature, then top-k, then top-p', () => {
    // Temperature 2: weights 1, 2, 3, 4, 5. Top 3: ids 4, 3, 2 with 5/12, 4/12, 3/12.
    // Top-p 0.5: 5/12 < 0.5 and 9/12 >= 0.5, so ids 4 and 3 remain as 5/9 and 4/9.
    const params = { temperature: 2, topK: 3, topP: 0.5, seed: 8 };
    const frequencies = drawFrequencies(params, squares, numDraws);
    assertFrequencies(frequencies, [0, 0, 0, 4 / 9, 5 / 9], numDraws);
  });

  it('never draws -Infinity tokens', () => {
    const logits = new Float32Array([Number.NEGATIVE_INFINITY, 0, Number.NEGATIVE_INFINITY, 0]);
    const frequencies = drawFrequencies({ temperature: 1, topK: 0, topP: 1, seed: 9 }, logits, numDraws);
    assertFrequencies(frequencies, [0, 0.5, 0, 0.5], numDraws);
  });

  it('finds a nucleus wider than the first candidate batch', () => {
    // 1200 equal logits and top_p 0.25: the nucleus is the 300 lowest ids (more than the 256
    // candidates tried first), each with probability 1/300. The check groups ids by 30, so each
    // group has probability 0.1.
    const logits = new Float32Array(1200);
    const numWideDraws = 10_000;
    const frequencies = drawFrequencies({ temperature: 0.5, topK: 0, topP: 0.25, seed: 10 }, logits, numWideDraws);
    const groupFrequencies = Array.from({ length: 40 }, (_, group) =>
      frequencies.slice(30 * group, 30 * (group + 1)).reduce((sum, f) => sum + f, 0),
    );
    const expected = Array.from({ length: 40 }, (_, group) => (group < 10 ? 0.1 : 0));
    assertFrequencies(groupFrequencies, expected, numWideDraws);
  });
});

describe('Sampler on a large vocabulary', () => {
  it('draws only tokens inside the naive filtered set', () => {
    const vocabSize = 50_000;
    const cases: SamplingParams[] = [
      { temperature: 0.8, topK: 50, topP: 1, seed: 11 },
      { temperature: 0.8, topK: 0, topP: 0.9, seed: 12 },
      { temperature: 1.2, topK: 10_000, topP: 0.5, seed: 13 },
    ];
    for (const params of cases) {
      const logits = randomLogits(vocabSize, params.seed ?? 0, 8);
      // Naive filter: full sort, temperature, top-k, then top-p over the renormalised top-k mass.
      const ranking = naiveRanking(logits);
      const kept = params.topK > 0 ? ranking.slice(0, params.topK) : ranking;
      const weights = kept.map((id) => Math.exp(logits[id] / params.temperature));
      const total = weights.reduce((sum, w) => sum + w, 0);
      let cumulative = 0;
      let numKept = 0;
      while (numKept < kept.length && cumulative < params.topP * total) cumulative += weights[numKept++];
      const allowed = new Set(kept.slice(0, numKept));

      const sampler = new Sampler(params);
      const logprobs = naiveLogSoftmax(logits);
      for (let i = 0; i < 100; i++) {
        const token = sampler.sample(logits);
        assert.ok(allowed.has(token.tokenId), `${JSON.stringify(params)}: token ${token.tokenId} outside the filtered set`);
        assert.ok(Math.abs(token.logprob - logprobs[token.tokenId]) < 1e-9);
      }
    }
  });
});

describe('Sampler determinism', () => {
  it('repeats tokens for equal seeds', () => {
    const params: SamplingParams = { temperature: 0.9, topK: 40, topP: 0.95, seed: 1234 };
    const first = new Sampler(params);
    const second = new Sampler(params);
    for (let step = 0; step < 200; step++) {
      const logits = randomLogits(1000, step);
      assert.equal(first.sample(logits).tokenId, second.sample(logits).tokenId, `step ${step}`);
    }
  });

  it('differs between seeds', () => {
    const logits = new Float32Array(1000);
    const first = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 1 });
    const second = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 2 });
    const firstTokens = Array.from({ length: 20 }, () => first.sample(logits).tokenId);
    const secondTokens = Array.from({ length: 20 }, () => second.sample(logits).tokenId);
    assert.notDeepEqual(firstTokens, secondTokens);
  });

  it('reproduces a random seed through the seed field', () => {
    const logits = new Float32Array(1000);
    const unseeded = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: null });
    assert.ok(Number.isSafeInteger(unseeded.seed), `seed ${unseeded.seed}`);
    assert.ok(unseeded.seed >= 0, `seed ${unseeded.seed}`);
    const replay = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: unseeded.seed });
    for (let i = 0; i < 20; i++) assert.equal(unseeded.sample(logits).tokenId, replay.sample(logits).tokenId);
  });
});
