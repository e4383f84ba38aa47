import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { splitDictionary, toRecord } from '../../examples/cmudict/prepare.js';

const dictionary: Record<string, string> = {
  HELLO: 'HH AH0 L OW1',
  'HELLO(1)': 'HH EH0 L OW1',
  "O'NEIL": 'OW0 N IY1 L',
  AT: 'AE1 T',
  WORLD: 'W ER1 L D',
  CAT: 'K AE1 T',
  DOG: 'D AO1 G',
  TREES: 'T R IY1 Z',
};

describe('cmudict preparation', () => {
  it('formats a word as a prompt and completion', () => {
    assert.deepEqual(toRecord('HELLO', 'HH AH0 L OW1'), { prompt: 'word: HELLO\nphonemes:', completion: ' HH AH0 L OW1' });
  });

  it('keeps plain words within the length limits', () => {
    const { train, eval: evalRecords } = splitDictionary(dictionary, { numTrain: 3, numEval: 2, minLetters: 3, maxLetters: 5 });
    const words = [...train, ...evalRecords].map((record) => /word: (\w+)/.exec(record.prompt)![1]).sort();
    // AT is too short; HELLO(1) and O'NEIL are not plain words.
    assert.deepEqual(words, ['CAT', 'DOG', 'HELLO', 'TREES', 'WORLD']);
  });

  it('splits the same way every time without overlap', () => {
    const settings = { numTrain: 3, numEval: 2, minLetters: 3, maxLetters: 5 };
    const first = splitDictionary(dictionary, settings);
    assert.deepEqual(splitDictionary({ ...dictionary }, settings), first);
    const trainPrompts = new Set(first.train.map((record) => record.prompt));
    for (const record of first.eval) assert.equal(trainPrompts.has(record.prompt), false);
  });

  it('rejects a request larger than the dictionary', () => {
    assert.throws(() => splitDictionary(dictionary, { numTrain: 5, numEval: 2, minLetters: 3, maxLetters: 5 }), /fewer than the 7 requested/);
  });
});
