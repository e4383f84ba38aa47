import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FakeBackend, parseSse, SCRIPT_TEXT, startServer, type TestServer } from './helpers.js';

/** Token ids of "Once upon a time, there was a little girl named Lily." with BOS, from the stories260k README. */
const SCRIPT_PROMPT_IDS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];

async function post(server: TestServer, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

interface ErrorJson {
  error: { message: string; type: string; param: string | null; code: string | null };
}

describe('completions with the fake backend', () => {
  let server: TestServer;
  let backend: FakeBackend;

  before(async () => {
    server = await startServer({ limits: { maxJsonBytes: 4096 } });
    backend = server.backend as FakeBackend;
  });
  after(async () => {
    await server.close();
  });

  test('base model completion returns text and usage', async () => {
    const response = await post(server, { model: 'stories260k', prompt: SCRIPT_TEXT, max_tokens: 3, temperature: 0 });
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.equal(body.object, 'text_completion');
    assert.equal(body.model, 'stories260k');
    assert.equal(body.choices.length, 1);
    assert.equal(body.choices[0].text, ' Once upon a');
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.equal(body.choices[0].logprobs, null);
    assert.deepEqual(body.usage, { prompt_tokens: 16, completion_tokens: 3, total_tokens: 19 });
    const job = backend.submitted.at(-1);
    assert.deepEqual(job?.promptIds, SCRIPT_PROMPT_IDS);
    assert.deepEqual(job?.module, { kind: 'base' });
    assert.deepEqual(job?.sampling, { temperature: 0, topK: 0, topP: 1, seed: null });
    assert.deepEqual(job?.stopTokenIds, [2]);
  });

  test('end of sequence finishes with stop', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 100 });
    const body = await response.json();
    assert.equal(body.choices[0].text, ` ${SCRIPT_TEXT}`);
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.equal(body.usage.completion_tokens, 15);
  });

  test('stop string cuts text and cancels the job', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 100, stop: [' time', 'zzz'] });
    const body = await response.json();
    assert.equal(body.choices[0].text, ' Once upon a');
    assert.equal(body.choices[0].finish_reason, 'stop');
    const job = backend.submitted.at(-1);
    assert.ok(job !== undefined && backend.cancelled.includes(job.id), 'the job was cancelled after the stop string');
  });

  test('several prompts and n give one choice each', async () => {
    const response = await post(server, { model: 'stories260k', prompt: ['Hello', 'Once'], n: 2, seed: 7, max_tokens: 2 });
    const body = await response.json();
    assert.equal(body.choices.length, 4);
    assert.deepEqual(
      body.choices.map((choice: { index: number }) => choice.index),
      [0, 1, 2, 3],
    );
    const seeds = backend.submitted.slice(-4).map((job) => job.sampling.seed);
    assert.deepEqual(seeds, [7, 8, 7, 8]);
    // "Hello" is 4 tokens with BOS and "Once" 2; each prompt counts once in usage.
    assert.equal(body.usage.prompt_tokens, 6);
    assert.equal(body.usage.completion_tokens, 8);
  });

  test('logprobs return tokens and alternatives', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 2, logprobs: 2 });
    const body = await response.json();
    const logprobs = body.choices[0].logprobs;
    assert.deepEqual(logprobs.tokens, [' Once', ' upon']);
    assert.deepEqual(logprobs.token_logprobs, [-1, -1]);
    assert.equal(Object.keys(logprobs.top_logprobs[0]).length, 2);
    assert.deepEqual(Object.values(logprobs.top_logprobs[0]), [-2, -3]);
    assert.deepEqual(logprobs.text_offset, [0, 5]);
    assert.equal(backend.submitted.at(-1)?.topLogprobs, 2);
  });

  test('echo with logprobs includes the prompt', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 1, logprobs: 0, echo: true });
    const body = await response.json();
    assert.equal(body.choices[0].text, 'Hello Once');
    const logprobs = body.choices[0].logprobs;
    // Prompt: 3 pieces after BOS, which has no text and is left out, then one generated token.
    assert.equal(logprobs.tokens.length, 4);
    assert.deepEqual(logprobs.token_logprobs, [-0.5, -0.5, -0.5, -1]);
    assert.equal(backend.submitted.at(-1)?.promptLogprobs, true);
  });

  test('stream sends chunks, finish and done', async () => {
    const response = await post(server, {
      model: 'stories260k',
      prompt: 'Hello',
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = parseSse(await response.text());
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event));
    const text = chunks.flatMap((chunk) => chunk.choices.map((choice: { text: string }) => choice.text)).join('');
    assert.equal(text, ' Once upon a time');
    const finish = chunks.flatMap((chunk) => chunk.choices).filter((choice: { finish_reason: string | null }) => choice.finish_reason !== null);
    assert.deepEqual(
      finish.map((choice: { finish_reason: string }) => choice.finish_reason),
      ['length'],
    );
    assert.deepEqual(chunks.at(-1).usage, { prompt_tokens: 4, completion_tokens: 4, total_tokens: 8 });
  });

  test('stream with a stop string ends early', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 50, stream: true, stop: 'little' });
    const events = parseSse(await response.text());
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event));
    const text = chunks.flatMap((chunk) => chunk.choices.map((choice: { text: string }) => choice.text)).join('');
    assert.equal(text, ' Once upon a time, there was a ');
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  });

  test('client disconnect cancels the job', async () => {
    backend.holding = true;
    const controller = new AbortController();
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'stories260k', prompt: 'Hello', max_tokens: 50, stream: true }),
      signal: controller.signal,
    });
    assert.equal(response.status, 200);
    const job = backend.submitted.at(-1);
    assert.ok(job !== undefined);
    controller.abort();
    for (let i = 0; i < 100 && !backend.cancelled.includes(job.id); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    backend.release();
    assert.ok(backend.cancelled.includes(job.id), 'the job was cancelled');
  });

  test('invalid JSON is a 400 naming the problem', async () => {
    const response = await post(server, '{"model": "stories260k", ');
    assert.equal(response.status, 400);
    const body = (await response.json()) as ErrorJson;
    assert.equal(body.error.code, 'invalid_json');
    assert.equal(body.error.type, 'invalid_request_error');
    assert.match(body.error.message, /invalid JSON/);
  });

  const invalidCases: { name: string; body: Record<string, unknown>; param: string; pattern: RegExp }[] = [
    { name: 'unknown field', body: { model: 'stories260k', prompt: 'a', frequency_penalty: 1 }, param: 'frequency_penalty', pattern: /unknown field.*frequency_penalty.*supported fields/ },
    { name: 'temperature above 2', body: { model: 'stories260k', prompt: 'a', temperature: 3 }, param: 'temperature', pattern: /temperature/ },
    { name: 'top_p of 0', body: { model: 'stories260k', prompt: 'a', top_p: 0 }, param: 'top_p', pattern: /top_p/ },
    { name: 'logprobs above 5', body: { model: 'stories260k', prompt: 'a', logprobs: 6 }, param: 'logprobs', pattern: /logprobs/ },
    { name: 'negative max_tokens', body: { model: 'stories260k', prompt: 'a', max_tokens: -1 }, param: 'max_tokens', pattern: /max_tokens/ },
    { name: 'fractional n', body: { model: 'stories260k', prompt: 'a', n: 1.5 }, param: 'n', pattern: /\bn\b/ },
    { name: 'prompt of wrong type', body: { model: 'stories260k', prompt: 5 }, param: 'prompt', pattern: /prompt/ },
    { name: 'missing model', body: { prompt: 'a' }, param: 'model', pattern: /model/ },
    { name: 'five stop strings', body: { model: 'stories260k', prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }, param: 'stop', pattern: /at most 4/ },
    { name: 'context exceeded', body: { model: 'stories260k', prompt: 'Hello', max_tokens: 600 }, param: 'max_tokens', pattern: /context of 512 tokens/ },
  ];
  for (const invalid of invalidCases) {
    test(`rejects ${invalid.name}`, async () => {
      const response = await post(server, invalid.body);
      assert.equal(response.status, 400);
      const body = (await response.json()) as ErrorJson;
      assert.equal(body.error.param, invalid.param);
      assert.match(body.error.message, invalid.pattern);
    });
  }

  test('NaN temperature is rejected', async () => {
    // JSON has no NaN literal; a body with one is invalid JSON.
    const response = await post(server, '{"model": "stories260k", "prompt": "a", "temperature": NaN}');
    assert.equal(response.status, 400);
  });

  test('oversized JSON body is a 413', async () => {
    const response = await post(server, { model: 'stories260k', prompt: 'x'.repeat(10_000) });
    assert.equal(response.status, 413);
    const body = (await response.json()) as ErrorJson;
    assert.equal(body.error.code, 'payload_too_large');
    assert.match(body.error.message, /4096 bytes/);
  });

  test('non-JSON content type is a 415', async () => {
    const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
    assert.equal(response.status, 415);
  });

  test('unknown model is a 404', async () => {
    for (const model of ['no-such-module', '../../etc/passwd', 'stories260k/x']) {
      const response = await post(server, { model, prompt: 'a' });
      assert.equal(response.status, 404, model);
      const body = (await response.json()) as ErrorJson;
      assert.equal(body.error.code, 'model_not_found');
      assert.equal(body.error.param, 'model');
    }
  });

  test('full queue is a 429 with Retry-After', async () => {
    backend.maxQueue = 1;
    try {
      const response = await post(server, { model: 'stories260k', prompt: ['a', 'b'], max_tokens: 1 });
      assert.equal(response.status, 429);
      assert.equal(response.headers.get('retry-after'), '3');
      const body = (await response.json()) as ErrorJson;
      assert.equal(body.error.type, 'rate_limit_error');
      // The first prompt's job was already submitted and must be cancelled.
      const first = backend.submitted.at(-1);
      assert.ok(first !== undefined && backend.cancelled.includes(first.id));
    } finally {
      backend.maxQueue = Number.POSITIVE_INFINITY;
    }
  });

  test('backend error event becomes the response status', async () => {
    backend.failure = { status: 503, code: 'engine_failed', message: 'engine failed to run' };
    try {
      const response = await post(server, { model: 'stories260k', prompt: 'a', max_tokens: 1 });
      assert.equal(response.status, 503);
      const body = (await response.json()) as ErrorJson;
      assert.equal(body.error.code, 'engine_failed');
    } finally {
      backend.failure = null;
    }
    const healthy = await post(server, { model: 'stories260k', prompt: 'a', max_tokens: 1 });
    assert.equal(healthy.status, 200);
  });

  test('engine restart hint becomes Retry-After', async () => {
    backend.failure = { status: 503, code: 'engine_unavailable', message: 'the engine is restarting; retry in about 3 s', retryAfterSeconds: 2.4 };
    try {
      const response = await post(server, { model: 'stories260k', prompt: 'a', max_tokens: 1 });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get('retry-after'), '3');
      const body = (await response.json()) as ErrorJson;
      assert.equal(body.error.code, 'engine_unavailable');
    } finally {
      backend.failure = null;
    }
  });

  test('draining server rejects completions', async () => {
    server.lifecycle.draining = true;
    try {
      const response = await post(server, { model: 'stories260k', prompt: 'a' });
      assert.equal(response.status, 503);
      const ready = await fetch(`${server.url}/readyz`);
      assert.equal(ready.status, 503);
    } finally {
      server.lifecycle.draining = false;
    }
  });
});
