import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { Tokenizer } from '@huggingface/tokenizers';

import { IncrementalDetokenizer } from '../../src/runtime/detokenizer.js';

const STORIES_DIR = fileURLToPath(new URL('../../../../shared/models/stories260k/', import.meta.url));

/** Fake byte-level tokenizer: every id is one UTF-8 byte, decoded with U+FFFD for incomplete sequences. */
function decodeBytes(ids: readonly number[]): string {
  return new TextDecoder('utf-8').decode(Uint8Array.from(ids));
}

function utf8Ids(text: string): number[] {
  return [...new TextEncoder().encode(text)];
}

/**
 * Fake SentencePiece-style tokenizer: "▁" marks a space, and decoding drops the leading space of
 * the whole output, as the Metaspace and Strip decoders of Llama tokenizers do.
 */
const PIECES = ['▁Hello', '▁world', '!', '▁', 'ok'];
function decodePieces(ids: readonly number[]): string {
  const text = ids.map((id) => PIECES[id].replaceAll('▁', ' ')).join('');
  return text.startsWith(' ') ? text.slice(1) : text;
}

function pushAll(detokenizer: IncrementalDetokenizer, ids: readonly number[]): string[] {
  return ids.map((id) => detokenizer.push(id));
}

function loadStoriesTokenizer(): Tokenizer {
  const tokenizerJson: unknown = JSON.parse(readFileSync(`${STORIES_DIR}tokenizer.json`, 'utf8'));
  const tokenizerConfig: unknown = JSON.parse(readFileSync(`${STORIES_DIR}tokenizer_config.json`, 'utf8'));
  return new Tokenizer(tokenizerJson as object, tokenizerConfig as object);
}

describe('IncrementalDetokenizer with a byte-level decoder', () => {
  it('holds back split multi-byte characters', () => {
    // a = 61, € = E2 82 AC, b = 62, 🙂 = F0 9F 99 82, c = 63.
    const detokenizer = new IncrementalDetokenizer(decodeBytes);
    const chunks = pushAll(detokenizer, utf8Ids('a€b🙂c'));
    assert.deepEqual(chunks, ['a', '', '', '€', 'b', '', '', '', '🙂', 'c']);
    assert.equal(detokenizer.flush(), '');
  });

  it('joins to the full decode of mixed text', () => {
    const text = 'Grüße, 世界! Ünïcödé 🙂🚀 done';
    const detokenizer = new IncrementalDetokenizer(decodeBytes);
    const chunks = pushAll(detokenizer, utf8Ids(text));
    assert.equal(chunks.join('') + detokenizer.flush(), text);
    for (const chunk of chunks) assert.ok(!chunk.includes('\uFFFD'), `chunk ${JSON.stringify(chunk)}`);
  });

  it('flushes an incomplete character as U+FFFD', () => {
    const ids = [0x61, 0xe2, 0x82];
    const detokenizer = new IncrementalDetokenizer(decodeBytes);
    assert.deepEqual(pushAll(detokenizer, ids), ['a', '', '']);
    const rest = detokenizer.flush();
    assert.ok(rest.endsWith('\uFFFD'), `rest ${JSON.stringify(rest)}`);
    assert.equal('a' + rest, decodeBytes(ids));
    assert.equal(detokenizer.flush(), '');
  });

  it('ignores prompt bytes in the output', () => {
    const prompt = utf8Ids('Prompt: 日');
    const detokenizer = new IncrementalDetokenizer(decodeBytes, prompt);
    const chunks = pushAll(detokenizer, utf8Ids('本語'));
    assert.deepEqual(chunks, ['', '', '本', '', '', '語']);
  });
});

describe('IncrementalDetokenizer with a space-dropping decoder', () => {
  it('keeps the leading space after a prompt', () => {
    const detokenizer = new IncrementalDetokenizer(decodePieces, [0]);
    // The space token decodes to '' alone but to ' ' after "!", so it is emitted with that context.
    assert.deepEqual(pushAll(detokenizer, [1, 2, 3, 4]), [' world', '!', ' ', 'ok']);
    assert.equal(detokenizer.flush(), '');
  });

  it('matches decode of all ids without a prompt', () => {
    const ids = [0, 1, 3, 2, 1];
    const detokenizer = new IncrementalDetokenizer(decodePieces);
    const chunks = pushAll(detokenizer, ids);
    // The first token loses its space as in a whole decode.
    assert.equal(chunks.join('') + detokenizer.flush(), 'Hello world ! world');
    assert.equal(chunks[0], 'Hello');
  });
});

describe('IncrementalDetokenizer with the stories260k tokenizer', () => {
  const tokenizer = loadStoriesTokenizer();
  const decode = (ids: readonly number[]): string => tokenizer.decode([...ids], { skip_special_tokens: true });
  // Token ids of this sentence, BOS first, as the model's README lists them.
  const sentence = 'Once upon a time, there was a little girl named Lily.';
  const sentenceIds = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];

  it('encodes the README sentence to the listed ids', () => {
    assert.deepEqual(tokenizer.encode(sentence).ids, sentenceIds);
  });

  it('joins pushes to the decode of all ids', () => {
    const detokenizer = new IncrementalDetokenizer(decode);
    const chunks = pushAll(detokenizer, sentenceIds);
    const output = chunks.join('') + detokenizer.flush();
    assert.equal(output, decode(sentenceIds));
    assert.equal(output, sentence);
    // Words after the first keep their leading spaces, which per-token decoding would drop.
    assert.equal(chunks[2], ' upon');
  });

  it('joins pushes for the README greedy continuation', () => {
    const text =
      'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
      'One day, she saw a big, red ball. She wanted to play with it, but it was too high';
    const ids = tokenizer.encode(text).ids;
    const detokenizer = new IncrementalDetokenizer(decode);
    const output = pushAll(detokenizer, ids).join('') + detokenizer.flush();
    assert.equal(output, text);
  });

  it('continues a prompt with spaces intact', () => {
    // Prompt "Once upon a time", so the generated part is ", there was a little girl named Lily."
    const promptIds = sentenceIds.slice(0, 5);
    const detokenizer = new IncrementalDetokenizer(decode, promptIds);
    const chunks = pushAll(detokenizer, sentenceIds.slice(5));
    assert.equal(chunks.join('') + detokenizer.flush(), ', there was a little girl named Lily.');
    assert.equal(chunks[1], ' there');
  });

  it('handles byte-fallback pieces of multi-byte characters', () => {
    // Characters outside the 512-piece vocabulary are encoded as one <0xNN> piece per UTF-8 byte.
    const text = 'Lily saw 日本 and é and 🙂 too.';
    const ids = tokenizer.encode(text).ids;
    assert.ok(ids.length > text.length / 2, 'expected byte-fallback pieces');
    const detokenizer = new IncrementalDetokenizer(decode, ids.slice(0, 1));
    const chunks = pushAll(detokenizer, ids.slice(1));
    assert.equal(chunks.join('') + detokenizer.flush(), text);
    for (const chunk of chunks) assert.ok(!chunk.includes('\uFFFD'), `chunk ${JSON.stringify(chunk)}`);
  });
});
