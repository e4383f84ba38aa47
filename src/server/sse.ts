/**
 * Server-sent events for streamed completions: `data: <json>` lines separated by blank lines,
 * ending with `data: [DONE]`, the framing the OpenAI API uses.
 * @module
 */
import type { Response } from 'express';

/** An open event stream on a response. Writes after `end` or after the client left are dropped. */
export class SseStream {
  private readonly res: Response;
  private ended = false;

  /** Sends the status line and event-stream headers right away, so clients see the stream open before the first token. */
  constructor(res: Response) {
    this.res = res;
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('Connection', 'keep-alive');
    res.setHeader('X-Accel-Buffering', 'no');
    res.flushHeaders();
  }

  get isOpen(): boolean {
    return !this.ended && !this.res.destroyed && !this.res.writableEnded;
  }

  /** Sends one JSON event. */
  send(data: unknown): void {
    if (this.isOpen) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Sends `data: [DONE]` and ends the response. */
  end(): void {
    if (!this.isOpen) return;
    this.ended = true;
    this.res.end('data: [DONE]\n\n');
  }
}
