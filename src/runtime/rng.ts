/**
 * Seeded pseudo-random numbers for sampling: xoshiro128** (Blackman and Vigna, "Scrambled linear
 * pseudorandom number generators", 2018). Its 128-bit state is filled from two outputs of
 * SplitMix64, the seeding that the same authors recommend. All state updates use 32-bit integer
 * operations, so a seed gives the same sequence on every platform and Node.js version.
 * @module
 */

/** A stream of pseudo-random numbers. */
export interface Rng {
  /** Returns a uniformly distributed integer in [0, 2^32). */
  nextUint32(): number;
  /** Returns a uniformly distributed float64 in [0, 1) with 53 random bits (two 32-bit draws). */
  nextFloat(): number;
  /** Returns a standard normal sample (mean 0, variance 1) from the Box-Muller transform. */
  nextNormal(): number;
}

/** Error for a seed that is not a non-negative safe integer. */
export class RngSeedError extends Error {
  override readonly name = 'RngSeedError';
}

const MASK_64 = (1n << 64n) - 1n;
const SPLITMIX64_GAMMA = 0x9e3779b97f4a7c15n;

/** Advances a SplitMix64 state by one step and returns the new state with its 64-bit output. */
function splitMix64(state: bigint): { state: bigint; output: bigint } {
  const next = (state + SPLITMIX64_GAMMA) & MASK_64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK_64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK_64;
  z = z ^ (z >> 31n);
  return { state: next, output: z };
}

/**
 * Computes the four 32-bit xoshiro128** state words for a seed from two SplitMix64 outputs, low
 * word of each output first. Throws {@link RngSeedError} unless the seed is an integer in [0, 2^53 - 1].
 */
export function seedXoshiro128(seed: number): Uint32Array {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RngSeedError(
      `invalid RNG seed ${seed}: expected an integer from 0 to ${Number.MAX_SAFE_INTEGER} (Number.MAX_SAFE_INTEGER)`,
    );
  }
  const first = splitMix64(BigInt(seed));
  const second = splitMix64(first.state);
  const words = new Uint32Array([
    Number(first.output & 0xffffffffn),
    Number(first.output >> 32n),
    Number(second.output & 0xffffffffn),
    Number(second.output >> 32n),
  ]);
  // xoshiro would output zeros forever from the all-zero state. No seed is known to produce
  // that state, so this guard only keeps the generator valid in theory.
  if ((words[0] | words[1] | words[2] | words[3]) === 0) words[0] = 1;
  return words;
}

const TWO_POW_32 = 4294967296;
const TWO_POW_MINUS_53 = 1 / 9007199254740992;

class Xoshiro128StarStar implements Rng {
  private readonly state: Uint32Array;
  /** Second Box-Muller output, returned by the next `nextNormal` call, or null when none is cached. */
  private spareNormal: number | null = null;

  constructor(seed: number) {
    this.state = seedXoshiro128(seed);
  }

  nextUint32(): number {
    const s = this.state;
    const s1 = s[1];
    const timesFive = Math.imul(s1, 5);
    const rotated = (timesFive << 7) | (timesFive >>> 25);
    const result = Math.imul(rotated, 9) >>> 0;

    const t = s1 << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return result;
  }

  nextFloat(): number {
    // 27 high bits of one draw and 26 of the next form a 53-bit integer, scaled to [0, 1).
    const high = this.nextUint32() >>> 5;
    const low = this.nextUint32() >>> 6;
    return (high * 67108864 + low) * TWO_POW_MINUS_53;
  }

  nextNormal(): number {
    if (this.spareNormal !== null) {
      const spare = this.spareNormal;
      this.spareNormal = null;
      return spare;
    }
    // 1 - u lies in (0, 1], so the logarithm is finite.
    const radius = Math.sqrt(-2 * Math.log(1 - this.nextFloat()));
    const angle = 2 * Math.PI * this.nextFloat();
    this.spareNormal = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }
}

/**
 * Creates a generator for `seed`, an integer in [0, 2^53 - 1]. Equal seeds give equal sequences.
 * Throws {@link RngSeedError} for any other seed.
 */
export function createRng(seed: number): Rng {
  return new Xoshiro128StarStar(seed);
}

/** Returns a random seed in [0, 2^53 - 1] from `Math.random`, for callers that request no seed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * TWO_POW_32) * 2097152 + Math.floor(Math.random() * 2097152);
}
