import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelConfig } from '../../src/model/config.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import {
  collateBatch,
  DataError,
  IGNORE_INDEX,
  parseJsonlRecords,
  planEpoch,
  tokenizeRecords,
  type ExampleTokenizer,
  type TrainingExample,
} from '../../src/train/data.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');

const BOS = 1;
const EOS = 2;
const MERGED_COLONS = 999;

/** One token per character (its code point), BOS first; "::" is one token, so merges across a boundary can be tested. */
const charTokenizer: ExampleTokenizer = {
  eosTokenIds: [EOS],
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[] {
    const ids: number[] = options?.addSpecialTokens === false ? [] : [BOS];
    for (let i = 0; i < text.length; i++) {
      if (text.startsWith('::', i)) {
        ids.push(MERGED_COLONS);
        i++;
      } else {
        ids.push(text.codePointAt(i) as number);
      }
    }
    return ids;
  },
};

const code = (character: string): number => character.codePointAt(0) as number;

describe('parseJsonlRecords', () => {
  it('reads both record forms and skips blank lines', () => {
    const records = parseJsonlRecords('{"prompt": "p", "completion": "c"}\n\n  \n{"text": "t", "id": 7}\n', 'data.jsonl');
    assert.deepEqual(records, [
      { kind: 'completion', line: 1, prompt: 'p', completion: 'c' },
      { kind: 'text', line: 4, text: 't' },
    ]);
  });

  it('names every invalid line with its number', () => {
    const text = [
      '{"prompt": "p", "completion": "c"}',
      '{"prompt": "p", "completion": ',
      '{"prompt": "p"}',
      '{"text": ""}',
      '[1, 2]',
      '{"text": "t", "prompt": "p", "completion": "c"}',
      '{"prompt": 3, "completion": "c"}',
      '{"other": "x"}',
    ].join('\n');
    assert.throws(
      () => parseJsonlRecords(text, 'bad.jsonl'),
      (error: unknown) => {
        assert.ok(error instanceof DataError);
        assert.match(error.message, /^7 invalid line\(s\) in bad\.jsonl/);
        assert.match(error.message, /bad\.jsonl:2: invalid JSON/);
        assert.match(error.message, /bad\.jsonl:3: field "completion" is missing/);
        assert.match(error.message, /bad\.jsonl:4: field "text" is empty/);
        assert.match(error.message, /bad\.jsonl:5: expected a JSON object, found an array/);
        assert.match(error.message, /bad\.jsonl:6: has both/);
        assert.match(error.message, /and 2 more invalid line/);
        return true;
      },
    );
  });

  it('rejects a file without records', () => {
    assert.throws(() => parseJsonlRecords('\n\n', 'empty.jsonl'), /empty\.jsonl contains no records/);
  });
});

describe('tokenizeRecords', () => {
  it('labels only the completion and EOS', () => {
    const records = parseJsonlRecords('{"prompt": "ab", "completion": "cd"}', 'd');
    const { examples, stats } = tokenizeRecords(records, charTokenizer, { maxLength: 16, source: 'd' });
    // Tokens: BOS a b c d EOS; targets are c, d and EOS, predicted at positions 2, 3 and 4.
    assert.deepEqual(examples[0].inputIds, [BOS, code('a'), code('b'), code('c'), code('d'), EOS]);
    assert.deepEqual(examples[0].labels, [IGNORE_INDEX, IGNORE_INDEX, code('c'), code('d'), EOS, IGNORE_INDEX]);
    assert.equal(examples[0].numTargetTokens, 3);
    assert.equal(stats.numTargetTokens, 3);
    assert.equal(stats.numTokens, 6);
  });

  it('labels every token after the first for text', () => {
    const { examples } = tokenizeRecords(parseJsonlRecords('{"text": "xy"}', 'd'), charTokenizer, { maxLength: 16, source: 'd' });
    assert.deepEqual(examples[0].labels, [code('x'), code('y'), EOS, IGNORE_INDEX]);
  });

  it('truncates long examples and counts them', () => {
    const records = parseJsonlRecords('{"prompt": "ab", "completion": "cdefg"}\n{"text": "abcdefgh"}', 'd');
    const { examples, stats } = tokenizeRecords(records, charTokenizer, { maxLength: 5, source: 'd' });
    assert.equal(stats.numTruncated, 2);
    assert.deepEqual(examples[0].inputIds, [BOS, code('a'), code('b'), code('c'), code('d')]);
    assert.deepEqual(examples[0].labels, [IGNORE_INDEX, IGNORE_INDEX, code('c'), code('d'), IGNORE_INDEX]);
    assert.equal(examples[1].inputIds.length, 5);
  });

  it('skips records whose prompt fills the maximum length', () => {
    const records = parseJsonlRecords('{"prompt": "abcd", "completion": "e"}\n{"prompt": "a", "completion": "b"}', 'd');
    const { examples, stats } = tokenizeRecords(records, charTokenizer, { maxLength: 5, source: 'd' });
    assert.equal(stats.numSkippedLongPrompt, 1);
    assert.equal(examples.length, 1);
    assert.equal(examples[0].line, 2);
  });

  it('rejects data where nothing fits', () => {
    const records = parseJsonlRecords('{"prompt": "abcdef", "completion": "e"}', 'd');
    assert.throws(() => tokenizeRecords(records, charTokenizer, { maxLength: 4, source: 'd' }), /none of the 1 record\(s\)/);
  });

  it('encodes the completion alone when a token spans the boundary', () => {
    const records = parseJsonlRecords('{"prompt": "q:", "completion": ":r"}', 'd');
    const { examples, stats } = tokenizeRecords(records, charTokenizer, { maxLength: 16, source: 'd' });
    assert.equal(stats.numBoundaryMerges, 1);
    assert.deepEqual(examples[0].inputIds, [BOS, code('q'), code(':'), code(':'), code('r'), EOS]);
  });

  it('keeps the prompt tokens of generation with the real tokenizer', async () => {
    const config = await loadModelConfig(STORIES);
    const tokenizer = await loadTokenizer(STORIES, config);
    const prompt = 'word: HELLO\nphonemes:';
    const records = parseJsonlRecords(JSON.stringify({ prompt, completion: ' HH AH0 L OW1' }), 'd');
    const { examples } = tokenizeRecords(records, tokenizer, { maxLength: 512, source: 'd' });
    const promptIds = tokenizer.encode(prompt);
    assert.equal(promptIds[0], 1, 'stories260k prepends BOS (id 1)');
    assert.deepEqual(examples[0].inputIds.slice(0, promptIds.length), promptIds);
    assert.equal(examples[0].inputIds.at(-1), 2, 'EOS (id 2) ends the example');
    const completionIds = examples[0].inputIds.slice(promptIds.length, -1);
    assert.equal(tokenizer.decode([...promptIds, ...completionIds]), `${prompt} HH AH0 L OW1`);
  });
});

describe('planEpoch', () => {
  const lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10];
  const base = { batchSize: 3, shuffle: false, seed: 0, bucketByLength: false };

  it('keeps file order without shuffling', () => {
    assert.deepEqual(planEpoch(lengths, 0, base), [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]);
  });

  it('shuffles deterministically per seed and epoch', () => {
    const shuffled = { ...base, shuffle: true, seed: 42 };
    const first = planEpoch(lengths, 0, shuffled);
    assert.deepEqual(planEpoch(lengths, 0, shuffled), first);
    assert.deepEqual(first.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.notDeepEqual(planEpoch(lengths, 1, shuffled).flat(), first.flat());
    assert.notDeepEqual(planEpoch(lengths, 0, { ...shuffled, seed: 43 }).flat(), first.flat());
  });

  it('groups similar lengths when bucketing', () => {
    const batches = planEpoch(lengths, 0, { ...base, shuffle: true, bucketByLength: true });
    const sortedBatches = batches.map((batch) => batch.map((i) => lengths[i]).sort((a, b) => b - a));
    assert.deepEqual(sortedBatches.sort((a, b) => b[0] - a[0]), [[10, 9, 8], [7, 6, 5], [4, 3, 2], [1]]);
  });
});

describe('collateBatch', () => {
  it('pads on the right with mask 0 and ignored labels', () => {
    const examples: TrainingExample[] = [
      { inputIds: [1, 5, 6], labels: [-100, 6, -100], numTargetTokens: 1, line: 1 },
      { inputIds: [1, 7], labels: [7, -100], numTargetTokens: 1, line: 2 },
    ];
    const batch = collateBatch(examples, [1, 0], 0);
    assert.deepEqual(batch.inputIds, [[1, 7, 0], [1, 5, 6]]);
    assert.deepEqual(batch.attentionMask, [[1, 1, 0], [1, 1, 1]]);
    assert.deepEqual(batch.labels, [[7, -100, -100], [-100, 6, -100]]);
  });
});
