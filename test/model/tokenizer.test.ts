import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '../../src/model/config.js';
import { loadTokenizer, TokenizerError, type TextTokenizer } from '../../src/model/tokenizer.js';

const STORIES_DIR = '/work/shared/models/stories260k';
const STORIES_PROMPT = 'Once upon a time, there was a little girl named Lily.';
const STORIES_PROMPT_IDS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
// Greedy decoding of 60 tokens from BOS alone, as llama2.c's run.c produces it on the original weights.
const STORIES_GREEDY_TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high';

/**
 * GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves and the other 68
 * bytes to U+0100 onwards, in byte order (so the space 0x20 becomes U+0120 'Ġ').
 */
function byteLevelAlphabet(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const chars = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(0x100 + next++);
  }
  return chars;
}

const ALPHABET = byteLevelAlphabet();
const SPACE = ALPHABET[0x20];

// Tiny byte-level vocabulary: the symbol of byte b has id b, then four merges and <|endoftext|>.
const HE = 256;
const LL = 257;
const SPACE_W = 258;
const HELL = 259;
const END_OF_TEXT = 260;

function tinyVocab(): Record<string, number> {
  const vocab: Record<string, number> = {};
  ALPHABET.forEach((symbol, byte) => {
    vocab[symbol] = byte;
  });
  vocab.he = HE;
  vocab.ll = LL;
  vocab[`${SPACE}w`] = SPACE_W;
  vocab.hell = HELL;
  vocab['<|endoftext|>'] = END_OF_TEXT;
  return vocab;
}

const TINY_MERGES = ['#version: 0.2', 'h e', 'l l', `${SPACE} w`, 'he ll', ''].join('\n');

const GPT2_CONFIG: ModelConfig = parseModelConfig({
  model_type: 'gpt2',
  vocab_size: 261,
  n_embd: 4,
  n_layer: 1,
  n_head: 1,
  n_positions: 8,
  bos_token_id: END_OF_TEXT,
  eos_token_id: END_OF_TEXT,
});

function byteIds(text: string): number[] {
  return [...new TextEncoder().encode(text)];
}

let scratchRoot: string;
let folderCount = 0;

async function makeFolder(files: Record<string, string>): Promise<string> {
  const dir = path.join(scratchRoot, `tokenizer-${folderCount++}`);
  await mkdir(dir);
  for (const [name, contents] of Object.entries(files)) await writeFile(path.join(dir, name), contents);
  return dir;
}

async function loadTinyGpt2(extraFiles: Record<string, string> = {}, config = GPT2_CONFIG): Promise<TextTokenizer> {
  const dir = await makeFolder({ 'vocab.json': JSON.stringify(tinyVocab()), 'merges.txt': TINY_MERGES, ...extraFiles });
  return loadTokenizer(dir, config);
}

/** Copies the stories260k tokenizer into a scratch folder with another tokenizer_config.json. */
async function storiesWithTokenizerConfig(tokenizerConfig: object): Promise<string> {
  const dir = await makeFolder({ 'tokenizer_config.json': JSON.stringify(tokenizerConfig) });
  await copyFile(path.join(STORIES_DIR, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  return dir;
}

async function assertTokenizerError(promise: Promise<unknown>, fragments: readonly string[]): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof TokenizerError, `expected TokenizerError, got ${String(error)}`);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `message ${JSON.stringify(error.message)} lacks ${JSON.stringify(fragment)}`);
    }
    return true;
  });
}

before(async () => {
  scratchRoot = await mkdtemp(path.join(os.tmpdir(), 'tokenizer-test-'));
});

after(async () => {
  await rm(scratchRoot, { recursive: true, force: true });
});

describe('loadTokenizer stories260k', () => {
  let tokenizer: TextTokenizer;

  before(async () => {
    tokenizer = await loadTokenizer(STORIES_DIR, await loadModelConfig(STORIES_DIR));
  });

  it('encodes the documented prompt', () => {
    assert.deepEqual(tokenizer.encode(STORIES_PROMPT), STORIES_PROMPT_IDS);
  });

  it('encodes without special tokens', () => {
    assert.deepEqual(tokenizer.encode(STORIES_PROMPT, { addSpecialTokens: false }), STORIES_PROMPT_IDS.slice(1));
  });

  it('empty string gives BOS alone', () => {
    assert.deepEqual(tokenizer.encode(''), [1]);
    assert.deepEqual(tokenizer.encode('', { addSpecialTokens: false }), []);
  });

  it('decodes the documented prompt', () => {
    assert.equal(tokenizer.decode(STORIES_PROMPT_IDS), STORIES_PROMPT);
  });

  it('keeps special tokens on request', () => {
    const text = tokenizer.decode([1, 403, 2], { skipSpecialTokens: false });
    assert.ok(text.startsWith('<s>'), text);
    assert.ok(text.endsWith('</s>'), text);
    assert.ok(text.includes('Once'), text);
    assert.equal(tokenizer.decode([1, 403, 2]), 'Once');
  });

  it('greedy text round-trips', () => {
    const ids = tokenizer.encode(STORIES_GREEDY_TEXT);
    assert.equal(ids[0], 1);
    assert.equal(tokenizer.decode(ids), STORIES_GREEDY_TEXT);
  });

  it('non-ASCII text round-trips through byte fallback', () => {
    const text = 'Zoë saw 🐉 and 東京.';
    assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
    // '🐉' is not a piece of the 512-token vocabulary, so it becomes its four UTF-8 bytes <0xF0> <0x9F> <0x90> <0x89>.
    const dragonIds = ['<0xF0>', '<0x9F>', '<0x90>', '<0x89>'].map((piece) => tokenizer.tokenToId(piece));
    assert.ok(dragonIds.every((id) => id !== undefined));
    const ids = tokenizer.encode('🐉', { addSpecialTokens: false });
    assert.deepEqual(ids.slice(-4), dragonIds);
  });

  it('reports special token ids and vocabulary size', () => {
    assert.equal(tokenizer.bosTokenId, 1);
    assert.deepEqual(tokenizer.eosTokenIds, [2]);
    assert.equal(tokenizer.vocabSize, 512);
    assert.equal(tokenizer.tokenToId('<s>'), 1);
    assert.equal(tokenizer.tokenToId('</s>'), 2);
    assert.equal(tokenizer.tokenToId('<unk>'), 0);
    assert.equal(tokenizer.tokenToId('no such token'), undefined);
  });

  it('decode of an empty list is empty', () => {
    assert.equal(tokenizer.decode([]), '');
  });

  it('decode skips ids beyond the vocabulary', () => {
    assert.equal(tokenizer.decode([403, 600, 407]), tokenizer.decode([403, 407]));
    assert.equal(tokenizer.decode([600]), '');
  });

  it('decode rejects invalid ids', () => {
    for (const id of [-1, 1.5, NaN]) {
      assert.throws(() => tokenizer.decode([403, id]), TokenizerError, `id ${id}`);
    }
  });
});

describe('loadTokenizer add_bos_token', () => {
  it('false removes the BOS of the post-processor', async () => {
    const dir = await storiesWithTokenizerConfig({ add_bos_token: false, bos_token: '<s>', eos_token: '</s>' });
    const tokenizer = await loadTokenizer(dir, await loadModelConfig(STORIES_DIR));
    assert.deepEqual(tokenizer.encode(''), []);
    assert.deepEqual(tokenizer.encode(STORIES_PROMPT), STORIES_PROMPT_IDS.slice(1));
    assert.equal(tokenizer.bosTokenId, 1);
  });

  it('true prepends BOS for byte-level BPE', async () => {
    const tokenizer = await loadTinyGpt2({
      'tokenizer_config.json': JSON.stringify({ add_bos_token: true, bos_token: '<|endoftext|>' }),
    });
    assert.deepEqual(tokenizer.encode('hello'), [END_OF_TEXT, HELL, 'o'.charCodeAt(0)]);
    assert.deepEqual(tokenizer.encode(''), [END_OF_TEXT]);
    assert.deepEqual(tokenizer.encode('hello', { addSpecialTokens: false }), [HELL, 'o'.charCodeAt(0)]);
  });
});

describe('loadTokenizer vocab.json and merges.txt', () => {
  let tokenizer: TextTokenizer;

  before(async () => {
    tokenizer = await loadTinyGpt2();
  });

  it('applies merges by rank', () => {
    // 'hello' -> h e l l o -> he l l o -> he ll o -> hell o, and ' world' -> Ġw o r l d.
    const o = 'o'.charCodeAt(0);
    assert.deepEqual(tokenizer.encode('hello world'), [HELL, o, SPACE_W, o, ...byteIds('rld')]);
  });

  it('adds no BOS', () => {
    assert.deepEqual(tokenizer.encode(''), []);
    assert.deepEqual(tokenizer.encode('he'), [HE]);
    assert.deepEqual(tokenizer.encode('ll'), [LL]);
  });

  it('matches <|endoftext|> as one special token', () => {
    assert.deepEqual(tokenizer.encode('<|endoftext|>hello'), [END_OF_TEXT, HELL, 'o'.charCodeAt(0)]);
    assert.equal(tokenizer.decode([END_OF_TEXT, HELL, 'o'.charCodeAt(0)]), 'hello');
    assert.equal(tokenizer.decode([END_OF_TEXT, HELL], { skipSpecialTokens: false }), '<|endoftext|>hell');
  });

  it('falls back to bytes for non-ASCII text', () => {
    // 'é' is C3 A9 in UTF-8. The space before it is byte 0x20 of the same pre-token, with no merge.
    assert.deepEqual(tokenizer.encode('é'), [0xc3, 0xa9]);
    assert.deepEqual(tokenizer.encode('a é'), [0x61, 0x20, 0xc3, 0xa9]);
    assert.deepEqual(tokenizer.encode('😀'), [0xf0, 0x9f, 0x98, 0x80]);
    assert.equal(tokenizer.decode([0xf0, 0x9f, 0x98, 0x80]), '😀');
    assert.equal(tokenizer.decode([0x61, 0x20, 0xc3, 0xa9]), 'a é');
  });

  it('decodes without cleaning up spaces', () => {
    const text = 'hello , world . do n\'t';
    assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
  });

  it('reports special token ids and vocabulary size', () => {
    assert.equal(tokenizer.bosTokenId, END_OF_TEXT);
    assert.deepEqual(tokenizer.eosTokenIds, [END_OF_TEXT]);
    assert.equal(tokenizer.vocabSize, 261);
    assert.equal(tokenizer.tokenToId(`${SPACE}w`), SPACE_W);
    assert.equal(tokenizer.tokenToId('<|endoftext|>'), END_OF_TEXT);
  });

  it('takes EOS from tokenizer_config.json when config.json has none', async () => {
    const config = parseModelConfig({ model_type: 'gpt2', vocab_size: 261, n_embd: 4, n_layer: 1, n_head: 1, n_positions: 8 });
    const fromConfig = await loadTinyGpt2({ 'tokenizer_config.json': JSON.stringify({ eos_token: { content: 'hell' } }) }, config);
    assert.deepEqual(fromConfig.eosTokenIds, [HELL]);
    assert.equal(fromConfig.bosTokenId, null);

    const withoutAny = await loadTinyGpt2({}, config);
    assert.deepEqual(withoutAny.eosTokenIds, []);
  });

  it('honours add_prefix_space', async () => {
    const prefixed = await loadTinyGpt2({ 'tokenizer_config.json': JSON.stringify({ add_prefix_space: true }) });
    assert.deepEqual(prefixed.encode('w'), [SPACE_W]);
  });
});

describe('loadTokenizer errors', () => {
  it('empty folder names the files needed', async () => {
    const dir = await makeFolder({});
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), [dir, 'no files', 'tokenizer.json', 'vocab.json', 'merges.txt']);
  });

  it('vocab.json without merges.txt lists what was found', async () => {
    const dir = await makeFolder({ 'vocab.json': '{}', 'config.json': '{}' });
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), ['found: config.json, vocab.json', 'merges.txt']);
  });

  it('missing folder', async () => {
    const dir = path.join(scratchRoot, 'does-not-exist');
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), [dir]);
  });

  it('tokenizer.json that is not JSON', async () => {
    const dir = await makeFolder({ 'tokenizer.json': '{"model": ' });
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), [path.join(dir, 'tokenizer.json'), 'not valid JSON']);
  });

  it('tokenizer_config.json that is not JSON', async () => {
    const dir = await makeFolder({ 'tokenizer_config.json': 'nope' });
    await copyFile(path.join(STORIES_DIR, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), [path.join(dir, 'tokenizer_config.json'), 'not valid JSON']);
  });

  it('tokenizer.json the library rejects', async () => {
    const dir = await makeFolder({ 'tokenizer.json': JSON.stringify({ model: { type: 'Mystery' } }) });
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), [path.join(dir, 'tokenizer.json'), 'Mystery']);
  });

  it('merges.txt with a malformed line', async () => {
    const dir = await makeFolder({ 'vocab.json': JSON.stringify(tinyVocab()), 'merges.txt': '#version: 0.2\nh e\nabc\n' });
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), ['merges.txt', 'line 3', '"abc"']);
  });

  it('vocab.json with a non-integer id', async () => {
    const dir = await makeFolder({ 'vocab.json': JSON.stringify({ a: 'one' }), 'merges.txt': '' });
    await assertTokenizerError(loadTokenizer(dir, GPT2_CONFIG), ['vocab.json', '"a"', '"one"']);
  });
});
