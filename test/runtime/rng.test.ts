import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { createRng, randomSeed, RngSeedError, seedXoshiro128 } from '../../src/runtime/rng.js';

// Reference implementations written directly from the published C code with BigInt arithmetic,
// independent of the 32-bit tricks (Math.imul, >>> 0) in the module under test.
const MASK_32 = 0xffffffffn;
const MASK_64 = (1n << 64n) - 1n;

function referenceSplitMix64(seed: bigint, count: number): bigint[] {
  let x = seed;
  const outputs: bigint[] = [];
  for (let i = 0; i < count; i++) {
    x = (x + 0x9e3779b97f4a7c15n) & MASK_64;
    let z = x;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK_64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK_64;
    outputs.push(z ^ (z >> 31n));
  }
  return outputs;
}

function rotl32(x: bigint, k: bigint): bigint {
  return ((x << k) | (x >> (32n - k))) & MASK_32;
}

function referenceXoshiro128StarStar(state: bigint[], count: number): number[] {
  const s = [...state];
  const outputs: number[] = [];
  for (let i = 0; i < count; i++) {
    const result = (rotl32((s[1] * 5n) & MASK_32, 7n) * 9n) & MASK_32;
    const t = (s[1] << 9n) & MASK_32;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl32(s[3], 11n);
    outputs.push(Number(result));
  }
  return outputs;
}

function referenceStateForSeed(seed: number): bigint[] {
  const [a, b] = referenceSplitMix64(BigInt(seed), 2);
  return [a & MASK_32, a >> 32n, b & MASK_32, b >> 32n];
}

describe('seedXoshiro128', () => {
  it('matches published SplitMix64 outputs for seed 0', () => {
    // The first two SplitMix64 outputs from state 0 are 0xe220a8397b1dcdaf and 0x6e789e6aa1b965f4
    // (reference outputs of splitmix64.c by Sebastiano Vigna, reproduced in many test suites).
    const words = seedXoshiro128(0);
    assert.equal(words[0], 0x7b1dcdaf);
    assert.equal(words[1], 0xe220a839);
    assert.equal(words[2], 0xa1b965f4);
    assert.equal(words[3], 0x6e789e6a);
  });

  it('matches BigInt SplitMix64 for large seeds', () => {
    for (const seed of [1, 42, 2 ** 32 - 1, 2 ** 32, 123456789012345, Number.MAX_SAFE_INTEGER]) {
      const expected = referenceStateForSeed(seed).map(Number);
      assert.deepEqual([...seedXoshiro128(seed)], expected, `seed ${seed}`);
    }
  });

  it('rejects invalid seeds', () => {
    for (const seed of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
      assert.throws(() => seedXoshiro128(seed), RngSeedError, `seed ${seed}`);
    }
    assert.throws(() => createRng(-3), /invalid RNG seed -3/);
  });
});

describe('createRng nextUint32', () => {
  it('matches BigInt xoshiro128** for several seeds', () => {
    for (const seed of [0, 7, 99991, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
      const expected = referenceXoshiro128StarStar(referenceStateForSeed(seed), 1000);
      const rng = createRng(seed);
      const actual = Array.from({ length: 1000 }, () => rng.nextUint32());
      assert.deepEqual(actual, expected, `seed ${seed}`);
    }
  });

  it('repeats the sequence for equal seeds', () => {
    const a = createRng(2024);
    const b = createRng(2024);
    for (let i = 0; i < 100; i++) assert.equal(a.nextFloat(), b.nextFloat());
  });

  it('differs between adjacent seeds', () => {
    const a = createRng(5);
    const b = createRng(6);
    const first = Array.from({ length: 8 }, () => a.nextUint32());
    const second = Array.from({ length: 8 }, () => b.nextUint32());
    assert.notDeepEqual(first, second);
  });
});

describe('createRng nextFloat', () => {
  it('builds each float from two uint32 draws', () => {
    const reference = referenceXoshiro128StarStar(referenceStateForSeed(11), 20);
    const rng = createRng(11);
    for (let i = 0; i < 10; i++) {
      const high = reference[2 * i] >>> 5;
      const low = reference[2 * i + 1] >>> 6;
      assert.equal(rng.nextFloat(), (high * 2 ** 26 + low) / 2 ** 53);
    }
  });

  it('has uniform moments and bins', () => {
    const rng = createRng(314159);
    const count = 200_000;
    const numBins = 10;
    const bins = new Array<number>(numBins).fill(0);
    let sum = 0;
    let sumSquares = 0;
    for (let i = 0; i < count; i++) {
      const u = rng.nextFloat();
      assert.ok(u >= 0, `sample ${u} below 0`);
      assert.ok(u < 1, `sample ${u} not below 1`);
      sum += u;
      sumSquares += u * u;
      bins[Math.floor(u * numBins)]++;
    }
    // Standard error of the mean is sqrt(1/12 / n) ~ 0.00065, so 0.004 is about 6 standard errors.
    assert.ok(Math.abs(sum / count - 0.5) < 0.004, `mean ${sum / count}`);
    assert.ok(Math.abs(sumSquares / count - 1 / 3) < 0.004, `second moment ${sumSquares / count}`);
    // Each bin count is Binomial(n, 0.1) with standard deviation ~134, so 800 is about 6 of them.
    for (const [i, binCount] of bins.entries()) {
      assert.ok(Math.abs(binCount - count / numBins) < 800, `bin ${i} has ${binCount}`);
    }
  });
});

describe('createRng nextNormal', () => {
  it('has standard normal moments', () => {
    const rng = createRng(271828);
    const count = 200_000;
    let sum = 0;
    let sumSquares = 0;
    let sumFourth = 0;
    let withinOne = 0;
    for (let i = 0; i < count; i++) {
      const z = rng.nextNormal();
      assert.ok(Number.isFinite(z), `sample ${z} is not finite`);
      sum += z;
      sumSquares += z * z;
      sumFourth += z ** 4;
      if (Math.abs(z) < 1) withinOne++;
    }
    // Standard errors: mean ~0.0022, variance ~0.0032, fourth moment (variance 96) ~0.022,
    // fraction within one sigma ~0.001. Each bound is 5-7 standard errors.
    assert.ok(Math.abs(sum / count) < 0.015, `mean ${sum / count}`);
    assert.ok(Math.abs(sumSquares / count - 1) < 0.02, `variance ${sumSquares / count}`);
    assert.ok(Math.abs(sumFourth / count - 3) < 0.15, `fourth moment ${sumFourth / count}`);
    assert.ok(Math.abs(withinOne / count - 0.682689) < 0.006, `fraction within 1 sigma ${withinOne / count}`);
  });
});

describe('randomSeed', () => {
  it('returns valid seeds', () => {
    for (let i = 0; i < 1000; i++) {
      const seed = randomSeed();
      assert.ok(Number.isSafeInteger(seed), `seed ${seed}`);
      assert.ok(seed >= 0, `seed ${seed}`);
    }
  });
});
