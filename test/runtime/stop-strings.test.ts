import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { StopStringMatcher } from '../../src/runtime/stop-strings.js';

/** Pushes each chunk and records what every push returned. */
function pushAll(matcher: StopStringMatcher, chunks: readonly string[]): { emits: string[]; stoppedAt: number } {
  const emits: string[] = [];
  let stoppedAt = -1;
  for (const [i, chunk] of chunks.entries()) {
    const result = matcher.push(chunk);
    emits.push(result.emit);
    if (result.stopped && stoppedAt === -1) stoppedAt = i;
  }
  return { emits, stoppedAt };
}

/** Expected output computed on the whole text at once: everything before the earliest stop string. */
function truncateAtFirstStop(text: string, stops: readonly string[]): { output: string; stopped: boolean } {
  let cut = -1;
  for (const stop of stops) {
    if (stop.length === 0) continue;
    const index = text.indexOf(stop);
    if (index !== -1 && (cut === -1 || index < cut)) cut = index;
  }
  return cut === -1 ? { output: text, stopped: false } : { output: text.slice(0, cut), stopped: true };
}

describe('StopStringMatcher', () => {
  it('finds a stop split across pushes', () => {
    const matcher = new StopStringMatcher(['\n\nUser:']);
    const { emits, stoppedAt } = pushAll(matcher, ['Hello', ' there\n', '\nUs', 'er: next']);
    assert.deepEqual(emits, ['Hello', ' there', '', '']);
    assert.equal(stoppedAt, 3);
    assert.equal(matcher.flush(), '');
  });

  it('releases held text once it stops matching', () => {
    const matcher = new StopStringMatcher(['END']);
    assert.deepEqual(matcher.push('the EN'), { emit: 'the ', stopped: false });
    assert.deepEqual(matcher.push('D'), { emit: '', stopped: true });

    const other = new StopStringMatcher(['END']);
    assert.deepEqual(other.push('the EN'), { emit: 'the ', stopped: false });
    assert.deepEqual(other.push('gine'), { emit: 'ENgine', stopped: false });
  });

  it('handles overlapping prefixes', () => {
    // "aab" inside "aaab": after "aa" the matcher must keep both a's, then shift by one.
    const matcher = new StopStringMatcher(['aab']);
    assert.deepEqual(matcher.push('xa'), { emit: 'x', stopped: false });
    assert.deepEqual(matcher.push('a'), { emit: '', stopped: false });
    assert.deepEqual(matcher.push('a'), { emit: 'a', stopped: false });
    assert.deepEqual(matcher.push('by'), { emit: '', stopped: true });
  });

  it('picks the earliest of several stops', () => {
    const matcher = new StopStringMatcher(['world', 'lo w', 'xyz']);
    const result = matcher.push('hello world');
    assert.deepEqual(result, { emit: 'hel', stopped: true });
  });

  it('holds back for the longest possible stop', () => {
    const matcher = new StopStringMatcher(['ab', 'abcd']);
    // "ab" completes first even though "abcd" is longer, because it occurs at the same position.
    assert.deepEqual(matcher.push('xa'), { emit: 'x', stopped: false });
    assert.deepEqual(matcher.push('bc'), { emit: '', stopped: true });

    const longer = new StopStringMatcher(['bc', 'abcd']);
    assert.deepEqual(longer.push('zab'), { emit: 'z', stopped: false });
    // "abcd" starts earlier than "bc" but is incomplete; "bc" completes, so the output ends before it.
    assert.deepEqual(longer.push('c'), { emit: 'a', stopped: true });
  });

  it('passes all text through with no stops', () => {
    const matcher = new StopStringMatcher([]);
    assert.deepEqual(matcher.push('any text'), { emit: 'any text', stopped: false });
    assert.deepEqual(matcher.push(''), { emit: '', stopped: false });
    assert.equal(matcher.flush(), '');
  });

  it('ignores empty stop strings', () => {
    const matcher = new StopStringMatcher(['', 'q']);
    assert.deepEqual(matcher.push('abc'), { emit: 'abc', stopped: false });
    assert.deepEqual(matcher.push('dqe'), { emit: 'd', stopped: true });
  });

  it('stops at the very start', () => {
    const matcher = new StopStringMatcher(['###']);
    assert.deepEqual(matcher.push('##'), { emit: '', stopped: false });
    assert.deepEqual(matcher.push('#after'), { emit: '', stopped: true });
    assert.equal(matcher.flush(), '');
  });

  it('stays stopped after a stop', () => {
    const matcher = new StopStringMatcher(['.']);
    assert.deepEqual(matcher.push('one. two'), { emit: 'one', stopped: true });
    assert.deepEqual(matcher.push('three'), { emit: '', stopped: true });
    assert.equal(matcher.flush(), '');
  });

  it('flushes a held partial stop at the end', () => {
    const matcher = new StopStringMatcher(['</s>']);
    assert.deepEqual(matcher.push('done </'), { emit: 'done ', stopped: false });
    assert.equal(matcher.flush(), '</');
  });

  it('matches whole-text truncation on random splits', () => {
    // Texts over a small alphabet so that partial matches are frequent.
    let state = 12345;
    const random = (): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    const alphabet = 'ab c';
    const stopSets: string[][] = [['abc'], ['aa', 'b c'], ['c a', 'ccc', 'abab'], ['a b c a']];
    for (let trial = 0; trial < 400; trial++) {
      const stops = stopSets[trial % stopSets.length];
      const length = Math.floor(random() * 30);
      const text = Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
      const chunks: string[] = [];
      for (let start = 0; start < text.length; ) {
        const size = Math.floor(random() * 4);
        chunks.push(text.slice(start, start + size));
        start += size;
      }

      const matcher = new StopStringMatcher(stops);
      const { emits, stoppedAt } = pushAll(matcher, chunks);
      const output = emits.join('') + matcher.flush();
      const expected = truncateAtFirstStop(text, stops);
      assert.equal(output, expected.output, `text ${JSON.stringify(text)} stops ${JSON.stringify(stops)}`);
      assert.equal(stoppedAt !== -1, expected.stopped, `text ${JSON.stringify(text)}`);
    }
  });
});
