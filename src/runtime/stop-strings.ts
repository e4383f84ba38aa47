/**
 * Stop strings on streamed text. The matcher finds the first occurrence of any stop string across
 * chunk boundaries. It holds back the tail of the stream while that could still be the start of
 * one, so no part of a stop string reaches the client.
 * @module
 */

/** Result of feeding one chunk of text. */
export interface StopStringPushResult {
  /** Text that is safe to send now, or '' while everything new is held back. */
  emit: string;
  /** Whether a stop string was found. The stop string and everything after it are dropped. */
  stopped: boolean;
}

/**
 * Matches stop strings incrementally. After a stop string is found the matcher stays stopped:
 * later pushes return `{ emit: '', stopped: true }` and `flush` returns ''.
 */
export class StopStringMatcher {
  private readonly stops: readonly string[];
  /** Text received but not yet emitted, because it could be the start of a stop string. */
  private pending = '';
  private stopped = false;

  /** `stops` may be empty; empty strings in it are ignored because they would match before any text. */
  constructor(stops: readonly string[]) {
    this.stops = stops.filter((stop) => stop.length > 0);
  }

  /**
   * Feeds newly decoded text. Returns the text safe to emit now, and whether a stop string was
   * hit (the stop string and the text after it are dropped). Text that could still be the start
   * of a stop string is held back.
   */
  push(text: string): StopStringPushResult {
    if (this.stopped) return { emit: '', stopped: true };
    const buffer = this.pending + text;

    // The earliest occurrence wins. Earlier text was emitted only when no stop string could
    // start in it, so every occurrence starts inside `buffer`.
    let stopIndex = -1;
    for (const stop of this.stops) {
      const index = buffer.indexOf(stop);
      if (index !== -1 && (stopIndex === -1 || index < stopIndex)) stopIndex = index;
    }
    if (stopIndex !== -1) {
      this.stopped = true;
      this.pending = '';
      return { emit: buffer.slice(0, stopIndex), stopped: true };
    }

    const numHeld = this.longestStopPrefixAtEnd(buffer);
    this.pending = buffer.slice(buffer.length - numHeld);
    return { emit: buffer.slice(0, buffer.length - numHeld), stopped: false };
  }

  /** Returns the held-back text at the end of generation (no stop string hit) and clears it. */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }

  /** Returns the length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private longestStopPrefixAtEnd(text: string): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
        if (text.endsWith(stop.slice(0, length))) {
          longest = length;
          break;
        }
      }
    }
    return longest;
  }
}
