import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { drainServer } from '../../src/server/shutdown.js';
import { FakeBackend, parseSse, startServer, type TestServer } from './helpers.js';

interface ErrorJson {
  error: { message: string; type: string; param: string | null; code: string | null };
}

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(condition(), 'condition reached within 1 s');
}

function post(server: TestServer, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
}

describe('shutdown', () => {
  let server: TestServer | null = null;

  afterEach(async () => {
    await server?.close();
    server = null;
  });

  test('jobs cancelled by shutdown end with an error', async () => {
    server = await startServer({});
    const backend = server.backend as FakeBackend;
    backend.holding = true;
    const plain = post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 10 });
    const streamed = await post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 10, stream: true });
    await waitFor(() => backend.active.size === 2);

    await backend.shutdown(0);

    const plainResponse = await plain;
    assert.equal(plainResponse.status, 503);
    const plainJson = (await plainResponse.json()) as ErrorJson;
    assert.equal(plainJson.error.code, 'shutting_down');
    assert.equal(plainJson.error.type, 'service_unavailable_error');

    assert.equal(streamed.status, 200);
    const events = parseSse(await streamed.text());
    assert.equal(events.at(-1), '[DONE]');
    const last = JSON.parse(events.at(-2) ?? 'null') as ErrorJson;
    assert.equal(last.error.code, 'shutting_down');
    const finishReasons = events
      .slice(0, -1)
      .map((event) => JSON.parse(event))
      .flatMap((chunk) => chunk.choices ?? [])
      .map((choice: { finish_reason: string | null }) => choice.finish_reason)
      .filter((reason) => reason !== null);
    assert.deepEqual(finishReasons, []);
  });

  test('draining answers 503 until jobs finish', async () => {
    server = await startServer({});
    const backend = server.backend as FakeBackend;
    backend.holding = true;
    const running = post(server, { model: 'stories260k', prompt: 'Hello', max_tokens: 3 });
    await waitFor(() => backend.active.size === 1);

    const drained = drainServer({
      server: server.server,
      backend,
      lifecycle: server.lifecycle,
      timeoutMs: 5000,
      logger: pino({ level: 'silent' }),
    });
    assert.equal(server.lifecycle.draining, true);

    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal((await ready.json()).status, 'draining');
    assert.equal(ready.headers.get('connection'), 'close');
    const rejected = await post(server, { model: 'stories260k', prompt: 'a', max_tokens: 1 });
    assert.equal(rejected.status, 503);
    assert.equal(((await rejected.json()) as ErrorJson).error.code, 'shutting_down');

    backend.release();
    const finished = await running;
    assert.equal(finished.status, 200);
    assert.equal((await finished.json()).choices[0].text, ' Once upon a');
    await drained;
    assert.equal(server.server.listening, false);
    await assert.rejects(fetch(`${server.url}/healthz`));
  });
});
