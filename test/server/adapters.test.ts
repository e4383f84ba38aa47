import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../../src/adapters/module-files.js';
import { pushModule } from '../../src/cli/push-command.js';
import { parseSafetensors, serializeSafetensors } from '../../src/model/safetensors.js';
import { hashApiKey, parseApiKeys } from '../../src/server/auth.js';
import { FakeBackend, makeModuleDir, moduleForm, startServer, type TestServer } from './helpers.js';

const KEYS = { acme: 'acme-secret-key', globex: 'globex-secret-key', admin: 'admin-secret-key' };

function auth(key: string): Record<string, string> {
  return { Authorization: `Bearer ${key}` };
}

describe('adapters, tenancy and metrics', () => {
  let server: TestServer;
  let backend: FakeBackend;
  let work: string;
  let moduleDir: string;
  let files: Record<string, Buffer>;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'inducer-modules-'));
    moduleDir = await makeModuleDir(work, 'greeter', { task: { prompt_template: 'Q: {prompt}\nA:', stop: ['little'] } });
    files = {
      [ADAPTER_CONFIG_FILE]: await readFile(path.join(moduleDir, ADAPTER_CONFIG_FILE)),
      [ADAPTER_WEIGHTS_FILE]: await readFile(path.join(moduleDir, ADAPTER_WEIGHTS_FILE)),
    };
    const apiKeys = parseApiKeys(
      [
        { key_sha256: hashApiKey(KEYS.acme), tenant: 'acme', role: 'user' },
        { key_sha256: hashApiKey(KEYS.globex), tenant: 'globex' },
        { key_sha256: hashApiKey(KEYS.admin), tenant: 'ops', role: 'admin' },
      ],
      'test keys',
    );
    server = await startServer({ apiKeys, limits: { maxUploadBytes: 64 * 1024 } });
    backend = server.backend as FakeBackend;
  });
  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  async function put(name: string, form: FormData, key = KEYS.acme): Promise<Response> {
    return fetch(`${server.url}/v1/adapters/${name}`, { method: 'PUT', headers: auth(key), body: form });
  }

  async function complete(body: Record<string, unknown>, key = KEYS.acme): Promise<Response> {
    return fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(key) },
      body: JSON.stringify(body),
    });
  }

  /** Lists the staging folders of unfinished uploads; a failed upload must leave none. */
  async function stagingEntries(): Promise<string[]> {
    return readdir(path.join(server.storeDir, '.staging')).catch(() => []);
  }

  test('missing or wrong key is a 401', async () => {
    const missing = await fetch(`${server.url}/v1/models`);
    assert.equal(missing.status, 401);
    assert.equal((await missing.json()).error.type, 'authentication_error');
    const wrong = await fetch(`${server.url}/v1/models`, { headers: auth('not-a-key') });
    assert.equal(wrong.status, 401);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });

  test('upload stores a module and lists it', async () => {
    const response = await put('greeter', moduleForm(files));
    assert.equal(response.status, 201);
    const body = await response.json();
    assert.equal(body.id, 'greeter');
    assert.equal(body.tenant, 'acme');
    assert.equal(body.key_rank, 2);
    assert.equal(body.value_rank, 4);
    assert.equal(body.size_bytes, files[ADAPTER_WEIGHTS_FILE].length);

    const models = await (await fetch(`${server.url}/v1/models`, { headers: auth(KEYS.acme) })).json();
    assert.deepEqual(
      models.data.map((model: { id: string }) => model.id),
      ['stories260k', 'greeter'],
    );
    const one = await fetch(`${server.url}/v1/adapters/greeter`, { headers: auth(KEYS.acme) });
    assert.equal(one.status, 200);
    assert.equal((await one.json()).version, body.version);
  });

  test('module completion applies template and stop', async () => {
    const response = await complete({ model: 'greeter', prompt: 'Hi', max_tokens: 50 });
    assert.equal(response.status, 200);
    const body = await response.json();
    // The module's stop string "little" cuts the scripted text.
    assert.equal(body.choices[0].text, ' Once upon a time, there was a ');
    assert.equal(body.choices[0].finish_reason, 'stop');
    const job = backend.submitted.at(-1);
    assert.equal(job?.module.kind, 'adapter');
    assert.match(job?.module.kind === 'adapter' ? job.module.key : '', /^acme\/greeter@/);
    const model = (await import('./helpers.js')).loadStories();
    assert.deepEqual(job?.promptIds, (await model).tokenizer.encode('Q: Hi\nA:'));
    assert.equal(body.usage.prompt_tokens, job?.promptIds.length);
  });

  test('other tenant cannot see or use the module', async () => {
    const get = await fetch(`${server.url}/v1/adapters/greeter`, { headers: auth(KEYS.globex) });
    assert.equal(get.status, 404);
    const list = await (await fetch(`${server.url}/v1/adapters`, { headers: auth(KEYS.globex) })).json();
    assert.deepEqual(list.data, []);
    const models = await (await fetch(`${server.url}/v1/models`, { headers: auth(KEYS.globex) })).json();
    assert.deepEqual(
      models.data.map((model: { id: string }) => model.id),
      ['stories260k'],
    );
    const use = await complete({ model: 'greeter', prompt: 'Hi' }, KEYS.globex);
    assert.equal(use.status, 404);
    const del = await fetch(`${server.url}/v1/adapters/greeter`, { method: 'DELETE', headers: auth(KEYS.globex) });
    assert.equal(del.status, 404);
    const still = await fetch(`${server.url}/v1/adapters/greeter`, { headers: auth(KEYS.acme) });
    assert.equal(still.status, 200);
  });

  test('same name in two tenants stays separate', async () => {
    const response = await put('greeter', moduleForm(files), KEYS.globex);
    assert.equal(response.status, 201);
    const acme = await (await fetch(`${server.url}/v1/adapters/greeter`, { headers: auth(KEYS.acme) })).json();
    const globex = await response.json();
    assert.notEqual(acme.version, globex.version);
    assert.equal(globex.tenant, 'globex');
  });

  test('admin lists all tenants, users may not', async () => {
    const admin = await fetch(`${server.url}/v1/adapters?all=true`, { headers: auth(KEYS.admin) });
    assert.equal(admin.status, 200);
    const tenants = (await admin.json()).data.map((adapter: { tenant: string; id: string }) => `${adapter.tenant}/${adapter.id}`);
    assert.deepEqual(tenants, ['acme/greeter', 'globex/greeter']);
    const user = await fetch(`${server.url}/v1/adapters?all=true`, { headers: auth(KEYS.acme) });
    assert.equal(user.status, 403);
    const badQuery = await fetch(`${server.url}/v1/adapters?everything=1`, { headers: auth(KEYS.acme) });
    assert.equal(badQuery.status, 400);
  });

  test('replacement keeps in-flight requests on the old version', async () => {
    backend.holding = true;
    const inFlight = complete({ model: 'greeter', prompt: 'Hi', max_tokens: 2 });
    for (let i = 0; i < 100 && backend.active.size === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    const oldJob = backend.submitted.at(-1);
    assert.ok(oldJob?.module.kind === 'adapter');
    const oldKey = oldJob.module.key;
    const oldDir = oldJob.module.dir;

    const replaced = await put('greeter', moduleForm(files));
    assert.equal(replaced.status, 200);
    const newVersion = (await replaced.json()).version;
    assert.ok(!oldKey.endsWith(`@${newVersion}`));
    // The old version stays on disk while the running request uses it.
    assert.deepEqual((await readdir(oldDir)).sort(), [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]);
    assert.ok(!backend.evicted.includes(oldKey));

    backend.release();
    const response = await inFlight;
    assert.equal(response.status, 200);
    assert.equal((await response.json()).choices[0].text, ' Once upon');
    for (let i = 0; i < 100 && !backend.evicted.includes(oldKey); i++) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.ok(backend.evicted.includes(oldKey), 'old version evicted after the request');
    await assert.rejects(readdir(oldDir), { code: 'ENOENT' });

    const next = await complete({ model: 'greeter', prompt: 'Hi', max_tokens: 1 });
    assert.equal(next.status, 200);
    const newJob = backend.submitted.at(-1);
    assert.ok(newJob?.module.kind === 'adapter' && newJob.module.key.endsWith(`@${newVersion}`));
  });

  const corrupt = (): Record<string, Buffer> => {
    const parsed = parseSafetensors(files[ADAPTER_WEIGHTS_FILE], 'test');
    const first = [...parsed.tensors.values()][0];
    first.data[3] = Number.NaN;
    return { [ADAPTER_CONFIG_FILE]: files[ADAPTER_CONFIG_FILE], [ADAPTER_WEIGHTS_FILE]: Buffer.from(serializeSafetensors(parsed.tensors)) };
  };
  const otherBaseConfig = (): Buffer => {
    const config = JSON.parse(files[ADAPTER_CONFIG_FILE].toString('utf8'));
    config.base_model.weights_sha256 = 'f'.repeat(64);
    return Buffer.from(JSON.stringify(config));
  };
  const uploadCases: { name: string; module: string; form: () => FormData; status: number; code: string; pattern: RegExp }[] = [
    {
      name: 'truncated safetensors',
      module: 'bad1',
      form: () => moduleForm({ ...files, [ADAPTER_WEIGHTS_FILE]: files[ADAPTER_WEIGHTS_FILE].subarray(0, files[ADAPTER_WEIGHTS_FILE].length - 100) }),
      status: 400,
      code: 'invalid_module',
      pattern: /adapter_model\.safetensors/,
    },
    { name: 'NaN value', module: 'bad2', form: () => moduleForm(corrupt()), status: 400, code: 'invalid_module', pattern: /NaN/ },
    {
      name: 'other base model',
      module: 'bad3',
      form: () => moduleForm({ ...files, [ADAPTER_CONFIG_FILE]: otherBaseConfig() }),
      status: 400,
      code: 'incompatible_module',
      pattern: /trained for base model/,
    },
    {
      name: 'invalid config JSON',
      module: 'bad4',
      form: () => moduleForm({ ...files, [ADAPTER_CONFIG_FILE]: '{"method": ' }),
      status: 400,
      code: 'invalid_module',
      pattern: /not valid JSON/,
    },
    {
      name: 'missing weights field',
      module: 'bad5',
      form: () => moduleForm({ [ADAPTER_CONFIG_FILE]: files[ADAPTER_CONFIG_FILE] }),
      status: 400,
      code: 'invalid_request',
      pattern: /missing multipart file field\(s\) adapter_model\.safetensors/,
    },
    {
      name: 'unexpected field',
      module: 'bad6',
      form: () => moduleForm({ ...files, 'extra.bin': 'x' }),
      status: 400,
      code: 'invalid_request',
      pattern: /too many multipart parts|unexpected multipart field/,
    },
    {
      name: 'oversized file',
      module: 'bad7',
      form: () => moduleForm({ ...files, [ADAPTER_WEIGHTS_FILE]: Buffer.alloc(200 * 1024) }),
      status: 413,
      code: 'payload_too_large',
      pattern: /65536 bytes/,
    },
  ];
  for (const uploadCase of uploadCases) {
    test(`upload rejects ${uploadCase.name}`, async () => {
      const response = await put(uploadCase.module, uploadCase.form());
      assert.equal(response.status, uploadCase.status);
      const body = await response.json();
      assert.equal(body.error.code, uploadCase.code);
      assert.match(body.error.message, uploadCase.pattern);
      const lookup = await fetch(`${server.url}/v1/adapters/${uploadCase.module}`, { headers: auth(KEYS.acme) });
      assert.equal(lookup.status, 404);
      for (let i = 0; i < 50 && (await stagingEntries()).length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(await stagingEntries(), []);
    });
  }

  test('upload rejects bad names and media types', async () => {
    for (const name of ['..%2F..%2Fetc', '.hidden', 'a%20b', 'x'.repeat(65), 'stories260k']) {
      const response = await put(name, moduleForm(files));
      assert.equal(response.status, 400, name);
      assert.equal((await response.json()).error.param, 'name');
    }
    const json = await fetch(`${server.url}/v1/adapters/plain`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', ...auth(KEYS.acme) },
      body: '{}',
    });
    assert.equal(json.status, 415);
    assert.deepEqual((await readdir(server.storeDir)).sort(), ['.staging', 'acme', 'globex']);
  });

  test('push command uploads a folder', async () => {
    const stored = await pushModule({ server: server.url, apiKey: KEYS.acme, name: 'pushed', dir: moduleDir });
    assert.equal(stored.id, 'pushed');
    assert.equal(stored.tenant, 'acme');
    await assert.rejects(pushModule({ server: server.url, apiKey: 'wrong', name: 'pushed', dir: moduleDir }), /status 401/);
  });

  test('delete removes the module and evicts it', async () => {
    const before = await (await fetch(`${server.url}/v1/adapters/pushed`, { headers: auth(KEYS.acme) })).json();
    const response = await fetch(`${server.url}/v1/adapters/pushed`, { method: 'DELETE', headers: auth(KEYS.acme) });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { id: 'pushed', object: 'adapter', deleted: true });
    assert.ok(backend.evicted.includes(`acme/pushed@${before.version}`));
    const gone = await fetch(`${server.url}/v1/adapters/pushed`, { headers: auth(KEYS.acme) });
    assert.equal(gone.status, 404);
    const again = await fetch(`${server.url}/v1/adapters/pushed`, { method: 'DELETE', headers: auth(KEYS.acme) });
    assert.equal(again.status, 404);
    await assert.rejects(readdir(path.join(server.storeDir, 'acme', 'pushed')), { code: 'ENOENT' });
  });

  test('metrics count requests, tokens and cache events', async () => {
    const response = await fetch(`${server.url}/metrics`);
    assert.equal(response.status, 200);
    const text = await response.text();
    const value = (pattern: RegExp): number => {
      const match = pattern.exec(text);
      assert.ok(match !== null, `metric ${pattern} present`);
      return Number(match[1]);
    };
    assert.ok(value(/^inducer_http_requests_total\{route="\/v1\/completions",method="POST",status="200"\} (\d+)/m) >= 3);
    assert.ok(value(/^inducer_http_requests_total\{route="\/v1\/adapters\/:name",method="PUT",status="201"\} (\d+)/m) >= 2);
    assert.ok(value(/^inducer_http_requests_total\{route="unmatched",method="GET",status="401"\} (\d+)/m) >= 1);
    assert.ok(value(/^inducer_generated_tokens_total\{model_kind="adapter"\} (\d+)/m) >= 3);
    assert.ok(value(/^inducer_time_to_first_token_seconds_count\{model_kind="adapter"\} (\d+)/m) >= 1);
    assert.ok(value(/^inducer_batch_size_count\{kind="decode"\} (\d+)/m) >= 3);
    assert.ok(value(/^inducer_module_cache_events_total\{event="miss"\} (\d+)/m) >= 1);
    assert.ok(value(/^inducer_module_cache_events_total\{event="hit"\} (\d+)/m) >= 1);
    assert.ok(value(/^inducer_module_load_bytes_total (\d+)/m) >= 1234);
    assert.match(text, /^process_cpu_user_seconds_total /m);
  });
});
