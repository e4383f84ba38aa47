import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../../src/adapters/module-files.js';
import { createWorkerBackend, type WorkerBackend } from '../../src/runtime/worker-backend.js';
import { createMetrics } from '../../src/server/metrics.js';
import { makeModuleDir, moduleForm, parseSse, startServer, STORIES_DIR, type TestServer } from './helpers.js';

/** Greedy output of stories260k from BOS alone, 60 tokens, from the model's README. */
const KNOWN_GREEDY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high';

describe('server with the worker backend', () => {
  let server: TestServer;
  let backend: WorkerBackend;
  let work: string;
  const modules: Record<string, FormData> = {};
  const moduleFiles: Record<string, Record<string, Buffer>> = {};

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'inducer-real-'));
    const metrics = createMetrics();
    backend = await createWorkerBackend({ modelDir: STORIES_DIR, maxBatchSize: 8, maxQueue: 64, cacheBytes: 16 * 1024 * 1024 }, metrics.observer);
    server = await startServer({ backend, metrics });
    for (const [name, seed] of [
      ['first', 1],
      ['second', 2],
    ] as const) {
      const dir = await makeModuleDir(work, name, { seed });
      moduleFiles[name] = {
        [ADAPTER_CONFIG_FILE]: await readFile(path.join(dir, ADAPTER_CONFIG_FILE)),
        [ADAPTER_WEIGHTS_FILE]: await readFile(path.join(dir, ADAPTER_WEIGHTS_FILE)),
      };
      modules[name] = moduleForm(moduleFiles[name]);
      const response = await fetch(`${server.url}/v1/adapters/${name}`, { method: 'PUT', body: modules[name] });
      assert.equal(response.status, 201);
    }
  });
  after(async () => {
    await server.close();
    await backend.shutdown(5000);
    await rm(work, { recursive: true, force: true });
  });

  async function complete(body: Record<string, unknown>): Promise<{ status: number; json: { choices: { text: string; finish_reason: string }[] } }> {
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: response.status, json: await response.json() };
  }

  test('greedy base completion matches the known output', async () => {
    const { status, json } = await complete({ model: 'stories260k', prompt: '', max_tokens: 60, temperature: 0 });
    assert.equal(status, 200);
    assert.equal(json.choices[0].text.trimStart(), KNOWN_GREEDY);
    assert.equal(json.choices[0].finish_reason, 'length');
  });

  test('concurrent mixed modules equal sequential', async () => {
    const requests = ['stories260k', 'first', 'second'].flatMap((model) =>
      ['Once upon a time', 'The dog'].map((prompt) => ({ model, prompt, max_tokens: 24, temperature: 0 })),
    );
    const sequential: string[] = [];
    for (const request of requests) {
      const { status, json } = await complete(request);
      assert.equal(status, 200);
      sequential.push(json.choices[0].text);
    }
    const concurrent = await Promise.all([...requests, ...requests].map((request) => complete(request)));
    concurrent.forEach(({ status, json }, i) => {
      assert.equal(status, 200);
      assert.equal(json.choices[0].text, sequential[i % requests.length], `request ${i % requests.length}`);
    });
  });

  test('stream equals the JSON response', async () => {
    const request = { model: 'first', prompt: 'Once upon a time', max_tokens: 30, temperature: 0 };
    const { json } = await complete(request);
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ...request, stream: true }),
    });
    const events = parseSse(await response.text());
    assert.equal(events.at(-1), '[DONE]');
    const text = events
      .slice(0, -1)
      .flatMap((event) => JSON.parse(event).choices.map((choice: { text: string }) => choice.text))
      .join('');
    assert.equal(text, json.choices[0].text);
  });

  test('stop string ends a real generation', async () => {
    const { json } = await complete({ model: 'stories260k', prompt: '', max_tokens: 60, temperature: 0, stop: ' Lily' });
    assert.equal(json.choices[0].text.trimStart(), 'Once upon a time, there was a little girl named');
    assert.equal(json.choices[0].finish_reason, 'stop');
  });

  test('replacement during a request keeps the old version', async () => {
    const request = { model: 'first', prompt: 'Once upon a time', max_tokens: 200, temperature: 0 };
    const { json: firstAlone } = await complete(request);
    const { json: secondAlone } = await complete({ ...request, model: 'second' });
    // The check below can only tell the versions apart if the two modules generate differently.
    assert.notEqual(firstAlone.choices[0].text, secondAlone.choices[0].text);

    const inFlight = complete(request);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const replaced = await fetch(`${server.url}/v1/adapters/first`, { method: 'PUT', body: moduleForm(moduleFiles.second) });
    assert.equal(replaced.status, 200);
    const { json: during } = await inFlight;
    assert.equal(during.choices[0].text, firstAlone.choices[0].text);

    const { json: afterReplace } = await complete(request);
    assert.equal(afterReplace.choices[0].text, secondAlone.choices[0].text);
  });
});
