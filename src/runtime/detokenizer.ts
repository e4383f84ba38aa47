/**
 * Incremental detokenization for streaming. Decoding one token at a time is wrong for two
 * reasons: a byte-level or byte-fallback tokenizer splits multi-byte UTF-8 characters across
 * tokens, and SentencePiece-style decoders drop the leading space of the first token they see.
 * So each step decodes a short window of recent ids and emits only the text that the newest ids
 * add after the window's context, the method of Hugging Face's TextStreamer and vLLM's
 * incremental detokenizer.
 * @module
 */

/** Replacement character that decoders produce for incomplete UTF-8 sequences. */
const REPLACEMENT_CHARACTER = '\uFFFD';

/** Number of prompt ids decoded as context before the first generated token (vLLM uses the same number). */
const NUM_PROMPT_CONTEXT_IDS = 5;

/**
 * Turns generated token ids into text chunks whose concatenation equals decoding all generated
 * ids after the prompt. Text that ends in U+FFFD is held back until a later token completes the
 * character or until `flush`.
 */
export class IncrementalDetokenizer {
  private readonly decode: (ids: readonly number[]) => string;
  /** Prompt ids followed by every pushed id. */
  private readonly ids: number[];
  /** Start of the context window: ids from here to `readOffset` were emitted already. */
  private prefixOffset: number;
  /** End of the emitted ids: text of ids from here on has not been emitted. */
  private readOffset: number;

  /**
   * `decode` turns ids into text (for example, a tokenizer's decode with special tokens skipped).
   * The last few `promptIds` serve as context, so the first generated token keeps its leading space.
   */
  constructor(decode: (ids: readonly number[]) => string, promptIds: readonly number[] = []) {
    this.decode = decode;
    this.ids = [...promptIds];
    this.readOffset = this.ids.length;
    this.prefixOffset = Math.max(this.ids.length - NUM_PROMPT_CONTEXT_IDS, 0);
  }

  /** Adds one generated token id; returns the new text it completes ('' while a multi-byte character is incomplete). */
  push(tokenId: number): string {
    this.ids.push(tokenId);
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const windowText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (windowText.length <= prefixText.length || windowText.endsWith(REPLACEMENT_CHARACTER)) return '';

    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return windowText.slice(prefixText.length);
  }

  /** Returns any remaining text (for example, an incomplete character decoded as U+FFFD) and marks it emitted. */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const windowText = this.decodeRange(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return windowText.slice(prefixText.length);
  }

  /** Decodes ids[start, end); an empty range is '' without calling `decode`, which some tokenizers reject. */
  private decodeRange(start: number, end: number): string {
    return start < end ? this.decode(this.ids.slice(start, end)) : '';
  }
}
