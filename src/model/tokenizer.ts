/**
 * Text tokenizers for Hugging Face model folders, built on `@huggingface/tokenizers`: either
 * `tokenizer.json` as it is, or a GPT-2 style `vocab.json` + `merges.txt` pair turned into the
 * equivalent byte-level BPE `tokenizer.json` in memory.
 * @module
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import type { ModelConfig } from './config.js';

/** Error for tokenizer files that cannot be used or token ids that cannot be decoded. */
export class TokenizerError extends Error {
  override readonly name = 'TokenizerError';
}

/** Converts between text and the model's token ids. */
export interface TextTokenizer {
  /**
   * Encodes text to token ids. With `addSpecialTokens` (default true) the ids start with the BOS
   * token when the tokenizer adds one (its post-processor, or `add_bos_token` in
   * tokenizer_config.json), so `encode('')` gives `[bos]` for such tokenizers and `[]` otherwise.
   *
   * NOTE: special-token strings inside `text` (such as `</s>`) are matched as special tokens, as
   * Hugging Face tokenizers do by default.
   * @throws TokenizerError when a piece of the text has no id and the vocabulary has no unknown token.
   */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /**
   * Decodes token ids to text. With `skipSpecialTokens` (default true) special tokens such as BOS
   * and EOS are left out. Ids that the vocabulary does not contain (for example rows of an
   * embedding matrix padded beyond the vocabulary) decode to nothing.
   * @throws TokenizerError for an id that is not a non-negative integer.
   */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /** BOS token id: `bos_token_id` of config.json, else the id of tokenizer_config.json's `bos_token`. */
  readonly bosTokenId: number | null;
  /** Ids that end generation: `eos_token_id` of config.json, else the id of tokenizer_config.json's `eos_token`. */
  readonly eosTokenIds: readonly number[];
  /** One more than the largest token id of the vocabulary, including added tokens. */
  readonly vocabSize: number;
  /** Id of a token string exactly as the vocabulary spells it (for example `Ġworld` or `▁world`). */
  tokenToId(token: string): number | undefined;
}

/** The JSON object of tokenizer_config.json, in which every field is optional. */
type TokenizerConfigJson = Record<string, unknown>;

/** Token that byte-level BPE vocabularies such as GPT-2's use for end of text. */
const END_OF_TEXT = '<|endoftext|>';

/**
 * Loads the tokenizer of a model folder: `tokenizer.json` (with `tokenizer_config.json` when
 * present), or else `vocab.json` + `merges.txt`.
 * @throws TokenizerError when no tokenizer files are found, a file is not valid JSON, or the
 *   library rejects the tokenizer definition.
 */
export async function loadTokenizer(dir: string, config: ModelConfig): Promise<TextTokenizer> {
  const folder = path.resolve(dir);
  const fileNames = await listFolder(folder);
  const tokenizerConfig = fileNames.includes('tokenizer_config.json')
    ? await readJsonObject(path.join(folder, 'tokenizer_config.json'))
    : {};

  let definition: Record<string, unknown>;
  let source: string;
  if (fileNames.includes('tokenizer.json')) {
    source = path.join(folder, 'tokenizer.json');
    definition = completeDefinition(await readJsonObject(source));
  } else if (fileNames.includes('vocab.json') && fileNames.includes('merges.txt')) {
    source = path.join(folder, 'vocab.json');
    definition = await buildByteLevelDefinition(folder, tokenizerConfig);
  } else {
    const found = fileNames.length === 0 ? 'no files' : fileNames.join(', ');
    throw new TokenizerError(
      `no tokenizer files in ${folder} (found: ${found}); a model folder needs tokenizer.json, ` +
        'or vocab.json together with merges.txt',
    );
  }

  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(definition, tokenizerConfig);
  } catch (cause) {
    throw new TokenizerError(`cannot build a tokenizer from ${source}: ${(cause as Error).message}`, { cause });
  }
  return new HfTextTokenizer(tokenizer, tokenizerConfig, config);
}

async function listFolder(folder: string): Promise<string[]> {
  try {
    return (await readdir(folder)).sort();
  } catch (cause) {
    throw new TokenizerError(
      `model folder ${folder} cannot be read (${(cause as Error).message}); pass the folder that contains tokenizer.json`,
      { cause },
    );
  }
}

async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  const text = await readFile(file, 'utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new TokenizerError(`${file} is not valid JSON (${(cause as Error).message}); download it again`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TokenizerError(`${file} must contain a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Fills fields that a tokenizer.json may leave out but that the JS library requires: it rejects a
 * definition without the four pipeline keys and iterates `added_tokens`.
 */
function completeDefinition(definition: Record<string, unknown>): Record<string, unknown> {
  const completed: Record<string, unknown> = { ...definition };
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
    if (completed[key] === undefined) completed[key] = null;
  }
  if (completed.added_tokens === undefined || completed.added_tokens === null) completed.added_tokens = [];
  return completed;
}

/**
 * Builds a byte-level BPE `tokenizer.json` object for a GPT-2 style `vocab.json` + `merges.txt` pair:
 * ByteLevel pre-tokenizer (prefix space only when tokenizer_config.json sets add_prefix_space), BPE
 * without an unknown token, ByteLevel decoder, and a post-processor that adds nothing.
 * `<|endoftext|>` and the special tokens that tokenizer_config.json names become special added
 * tokens when the vocabulary contains them.
 *
 * NOTE: `added_tokens.json` and `special_tokens_map.json` of slow-tokenizer folders are not read.
 */
async function buildByteLevelDefinition(folder: string, tokenizerConfig: TokenizerConfigJson): Promise<Record<string, unknown>> {
  const vocabFile = path.join(folder, 'vocab.json');
  const vocab = await readJsonObject(vocabFile);
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new TokenizerError(`${vocabFile}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, expected a non-negative integer`);
    }
  }
  const merges = parseMerges(await readFile(path.join(folder, 'merges.txt'), 'utf8'), path.join(folder, 'merges.txt'));

  const specialContents = new Set<string>([END_OF_TEXT]);
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const content = tokenContent(tokenizerConfig[key]);
    if (content !== null) specialContents.add(content);
  }
  const addedTokens = [...specialContents]
    .filter((content) => vocab[content] !== undefined)
    .map((content) => ({
      id: vocab[content] as number,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    }));

  const addPrefixSpace = tokenizerConfig.add_prefix_space === true;
  return {
    version: '1.0',
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** Parses merges.txt: an optional `#version` line, then one `left right` pair per line. */
function parseMerges(text: string, file: string): [string, string][] {
  const merges: [string, string][] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0 || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw new TokenizerError(`${file}: line ${i + 1} is ${JSON.stringify(line)}, expected two symbols separated by one space`);
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

/** Content of a token as tokenizer_config.json gives it: a string or an `{content}` object. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

class HfTextTokenizer implements TextTokenizer {
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  readonly vocabSize: number;
  /** BOS id that `encode` places first, or null when the tokenizer adds no BOS. */
  private readonly addedBosId: number | null;
  /** Whether the library's post-processor already puts `addedBosId` first. */
  private readonly postProcessorAddsBos: boolean;
  private readonly cleanUpTokenizationSpaces: boolean;

  constructor(
    private readonly tokenizer: Tokenizer,
    tokenizerConfig: TokenizerConfigJson,
    config: ModelConfig,
  ) {
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const tokenizerBosId = this.idOfConfigToken(tokenizerConfig.bos_token);
    this.bosTokenId = config.bosTokenId ?? tokenizerBosId;
    const tokenizerEosId = this.idOfConfigToken(tokenizerConfig.eos_token);
    if (config.eosTokenIds.length > 0) this.eosTokenIds = [...config.eosTokenIds];
    else if (tokenizerEosId !== null) this.eosTokenIds = [tokenizerEosId];
    else this.eosTokenIds = [];

    // The post-processor adds BOS when encoding '' with special tokens yields the BOS id first.
    const bosId = tokenizerBosId ?? config.bosTokenId;
    const emptyIds = tokenizer.encode('', { add_special_tokens: true }).ids;
    this.postProcessorAddsBos = bosId !== null && emptyIds[0] === bosId;
    // An explicit add_bos_token overrides the post-processor, as transformers' LlamaTokenizerFast does
    // when it rebuilds its post-processor. NOTE: add_eos_token is not applied.
    const addBos = typeof tokenizerConfig.add_bos_token === 'boolean' ? tokenizerConfig.add_bos_token : this.postProcessorAddsBos;
    this.addedBosId = addBos ? bosId : null;

    // The library removes spaces before punctuation by default, which makes decoding lossy, so the
    // cleanup runs only when tokenizer_config.json sets clean_up_tokenization_spaces to true.
    this.cleanUpTokenizationSpaces = tokenizerConfig.clean_up_tokenization_spaces === true;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const addSpecialTokens = options.addSpecialTokens ?? true;
    const encoding = this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens });
    const ids = encoding.ids;
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i])) {
        throw new TokenizerError(
          `token ${JSON.stringify(encoding.tokens[i])} of the input text has no id and the vocabulary has no unknown token; ` +
            'the tokenizer files are incomplete',
        );
      }
    }
    if (!addSpecialTokens) return ids;
    if (this.addedBosId !== null && !this.postProcessorAddsBos) return [this.addedBosId, ...ids];
    if (this.addedBosId === null && this.postProcessorAddsBos) return ids.slice(1);
    return ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const known: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) {
        throw new TokenizerError(`cannot decode token id ${id}: ids must be non-negative integers`);
      }
      if (this.tokenizer.id_to_token(id) !== undefined) known.push(id);
    }
    // The library rejects an empty id list, so an empty (or all-unknown) list is handled here.
    if (known.length === 0) return '';
    return this.tokenizer.decode(known, {
      skip_special_tokens: options.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: this.cleanUpTokenizationSpaces,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  private idOfConfigToken(value: unknown): number | null {
    const content = tokenContent(value);
    if (content === null) return null;
    return this.tokenizer.token_to_id(content) ?? null;
  }
}
