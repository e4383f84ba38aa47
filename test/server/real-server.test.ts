/**
 * End-to-end tests of the `inducer serve` process: the compiled CLI runs as a child process with
 * the worker backend and stories260k, listens on 127.0.0.1 with a free port and is checked over
 * real HTTP, then stopped with SIGTERM. A second server pulls its default model from a local
 * stand-in for the Hugging Face Hub.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { parseSafetensors, serializeSafetensors } from '../../src/model/safetensors.js';
import { moduleForm, STORIES_DIR } from './helpers.js';

const testDir = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(testDir, '../../src/cli.js');
const CONFIG_FILE = 'adapter_config.json';
const WEIGHTS_FILE = 'adapter_model.safetensors';
/** Greedy text of stories260k for 5 new tokens after BOS alone, from the model's README. */
const GREEDY_FIVE = 'Once upon a time,';
/** Context length of stories260k (`max_position_embeddings` in its config.json). */
const STORIES_CONTEXT = 512;

const runFile = promisify(execFile);

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

interface ServeProcess {
  url: string;
  child: ChildProcess;
  logs: LogLine[];
  /** Lines of standard output that are not JSON log records. */
  nonJsonLines: string[];
  stderr: () => string;
  /** Sends SIGTERM and resolves with the exit code and signal. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Environment for child processes without the caller's INDUCER_* and HF_* settings. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('INDUCER_') && !key.startsWith('HF_')) env[key] = value;
  }
  return { ...env, ...extra };
}

/**
 * Starts `inducer serve` with `args` and resolves once its "server listening" log line gives the
 * port. Rejects when the process exits first or does not listen within `timeoutMs`.
 */
async function startServe(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: LogLine[] = [];
  const nonJsonLines: string[] = [];
  let stderrText = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderrText += chunk.toString('utf8');
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`inducer serve did not log "server listening" within ${timeoutMs} ms; stderr: ${stderrText}`)), timeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      let entry: LogLine;
      try {
        entry = JSON.parse(line) as LogLine;
      } catch {
        nonJsonLines.push(line);
        return;
      }
      logs.push(entry);
      if (entry.msg === 'server listening') {
        clearTimeout(timer);
        resolve((entry.address as AddressInfo).port);
      }
    });
    void exited.then(([code, signal]) => {
      clearTimeout(timer);
      reject(new Error(`inducer serve exited (code ${code}, signal ${signal}) before listening; stderr: ${stderrText}; log: ${JSON.stringify(logs)}`));
    });
  });

  return {
    url: `http://127.0.0.1:${port}`,
    child,
    logs,
    nonJsonLines,
    stderr: () => stderrText,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const [code, signal] = await exited;
      return { code, signal };
    },
  };
}

/** Kills a server a failed test left running. */
function killIfRunning(server: ServeProcess | undefined): void {
  if (server !== undefined && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
}

/** Runs the compiled CLI to completion and returns its standard output. */
async function runCli(args: string[]): Promise<string> {
  const { stdout } = await runFile(process.execPath, [CLI, ...args], { env: cleanEnv() });
  return stdout;
}

async function readModule(dir: string): Promise<Record<string, Buffer>> {
  return {
    [CONFIG_FILE]: await readFile(path.join(dir, CONFIG_FILE)),
    [WEIGHTS_FILE]: await readFile(path.join(dir, WEIGHTS_FILE)),
  };
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** Checks status, JSON content type and the OpenAI error shape, and returns the error body. */
async function expectError(response: Response, status: number, type: string, code: string, message?: RegExp): Promise<ErrorBody> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  const body = JSON.parse(text) as ErrorBody;
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.type, type, text);
  assert.equal(body.error.code, code, text);
  assert.equal(typeof body.error.message, 'string');
  if (message !== undefined) assert.match(body.error.message, message);
  return body;
}

/** Sends a request with the exact path given, because fetch would resolve dot segments such as `%2e%2e`. */
async function rawRequest(url: string, method: string, rawPath: string, headers: Record<string, string>, body?: Buffer): Promise<Response> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ hostname, port, method, path: rawPath, headers }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('end', () => {
        const responseHeaders = new Headers();
        for (const [name, value] of Object.entries(incoming.headers)) if (typeof value === 'string') responseHeaders.set(name, value);
        resolve(new Response(Buffer.concat(chunks), { status: incoming.statusCode, headers: responseHeaders }));
      });
      incoming.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

/** Returns the multipart body and Content-Type that fetch would send for a form. */
async function encodeForm(form: FormData): Promise<{ body: Buffer; contentType: string }> {
  const encoded = new Request('http://127.0.0.1/', { method: 'PUT', body: form });
  return { body: Buffer.from(await encoded.arrayBuffer()), contentType: encoded.headers.get('content-type') ?? '' };
}

/**
 * Returns the value of a metric sample from Prometheus text whose labels include `labels`, or 0
 * when no such sample exists yet (prom-client leaves out label sets it has not seen).
 */
function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let found: number | null = null;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const sampleLabels = new Map<string, string>();
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) sampleLabels.set(pair[1], pair[2]);
    if (Object.entries(labels).every(([key, value]) => sampleLabels.get(key) === value)) {
      assert.equal(found, null, `more than one sample of ${name} matches ${JSON.stringify(labels)}`);
      found = Number(match[3]);
    }
  }
  return found ?? 0;
}

/**
 * Returns module weights with every value multiplied by `factor`. A freshly initialised module
 * changes greedy output only slightly, and a scaled one makes its effect visible within a few dozen tokens.
 */
function scaledWeights(weights: Buffer, factor: number): Buffer {
  const parsed = parseSafetensors(new Uint8Array(weights), WEIGHTS_FILE);
  for (const tensor of parsed.tensors.values()) {
    for (let i = 0; i < tensor.data.length; i++) tensor.data[i] *= factor;
  }
  return Buffer.from(serializeSafetensors(parsed.tensors));
}

/** Makes a copy of stories260k whose weights differ in one low mantissa bit, so it has another fingerprint but the same shapes. */
async function makeOtherModel(parent: string): Promise<string> {
  const dir = path.join(parent, 'stories260k-other');
  await cp(STORIES_DIR, dir, { recursive: true });
  const weightsPath = path.join(dir, 'model.safetensors');
  const weights = await readFile(weightsPath);
  const headerBytes = Number(weights.readBigUInt64LE(0));
  // Byte 0 of a little-endian float32 holds only low mantissa bits, so the value stays finite.
  weights[8 + headerBytes + 4 * 100] ^= 1;
  await writeFile(weightsPath, weights);
  return dir;
}

describe('inducer serve with API keys', () => {
  const keys = {
    alpha: randomBytes(32).toString('hex'),
    beta: randomBytes(32).toString('hex'),
    admin: randomBytes(32).toString('hex'),
  };
  let work: string;
  let storeDir: string;
  let server: ServeProcess;
  const moduleDirs: Record<string, string> = {};
  const files: Record<string, Record<string, Buffer>> = {};

  const auth = (key: string): Record<string, string> => ({ Authorization: `Bearer ${key}` });

  async function complete(key: string, body: Record<string, unknown>): Promise<Response> {
    return fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(key) },
      body: JSON.stringify(body),
    });
  }

  async function completeText(key: string, body: Record<string, unknown>): Promise<{ text: string; completionTokens: number }> {
    const response = await complete(key, body);
    const text = await response.text();
    assert.equal(response.status, 200, text);
    const json = JSON.parse(text) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    return { text: json.choices[0].text, completionTokens: json.usage.completion_tokens };
  }

  /** Checks that the server still returns the known greedy text for a normal completion. */
  async function assertServing(): Promise<void> {
    const { text } = await completeText(keys.alpha, { model: 'stories260k', prompt: '', max_tokens: 5, temperature: 0 });
    assert.equal(text.trimStart(), GREEDY_FIVE);
  }

  async function put(key: string, name: string, form: FormData): Promise<Response> {
    return fetch(`${server.url}/v1/adapters/${name}`, { method: 'PUT', headers: auth(key), body: form });
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'inducer-serve-'));
    storeDir = path.join(work, 'store');
    const keyFile = path.join(work, 'keys.json');
    await writeFile(
      keyFile,
      JSON.stringify([
        { key_sha256: sha256Hex(keys.alpha), tenant: 'alpha', role: 'user' },
        { key_sha256: sha256Hex(keys.beta), tenant: 'beta' },
        { key_sha256: sha256Hex(keys.admin), tenant: 'ops', role: 'admin' },
      ]),
    );

    const otherModel = await makeOtherModel(work);
    const inits: [string, string, number][] = [
      ['seed1', STORIES_DIR, 1],
      ['seed2', STORIES_DIR, 2],
      ['seed3', STORIES_DIR, 3],
      ['other', otherModel, 1],
    ];
    await Promise.all(
      inits.map(async ([name, model, seed]) => {
        moduleDirs[name] = path.join(work, 'modules', name);
        await runCli(['adapter', 'init', '--model', model, '--out', moduleDirs[name], '--key-rank', '2', '--value-rank', '4', '--seed', String(seed)]);
        files[name] = await readModule(moduleDirs[name]);
      }),
    );

    server = await startServe(['--model', STORIES_DIR, '--store', storeDir, '--api-keys', keyFile], cleanEnv());
  });

  after(async () => {
    killIfRunning(server);
    await rm(work, { recursive: true, force: true });
  });

  test('missing or wrong key is a 401', async () => {
    const body = JSON.stringify({ model: 'stories260k', prompt: 'x', max_tokens: 1 });
    const noKey = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    await expectError(noKey, 401, 'authentication_error', 'missing_api_key', /Authorization: Bearer/);

    const wrongKey = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(randomBytes(32).toString('hex')) },
      body,
    });
    await expectError(wrongKey, 401, 'authentication_error', 'invalid_api_key', /invalid API key/);

    // The key file stores hashes, so the hash itself must not work as a key.
    const hashAsKey = await fetch(`${server.url}/v1/models`, { headers: auth(sha256Hex(keys.alpha)) });
    await expectError(hashAsKey, 401, 'authentication_error', 'invalid_api_key');

    const adaptersNoKey = await fetch(`${server.url}/v1/adapters`);
    await expectError(adaptersNoKey, 401, 'authentication_error', 'missing_api_key');

    await assertServing();
  });

  test('push command uploads for its tenant', async () => {
    const output = await runCli(['push', '--server', server.url, '--api-key', keys.alpha, '--name', 'm', moduleDirs.seed1]);
    assert.match(output, /^pushed m: version \S+, \d+ bytes\n$/);

    const response = await fetch(`${server.url}/v1/adapters/m`, { headers: auth(keys.alpha) });
    assert.equal(response.status, 200);
    const adapter = (await response.json()) as { id: string; tenant: string; size_bytes: number };
    assert.equal(adapter.id, 'm');
    assert.equal(adapter.tenant, 'alpha');

    const { text } = await completeText(keys.alpha, { model: 'm', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
    assert.ok(text.length > 0);
  });

  test('other tenant gets 404 for the module', async () => {
    const get = await fetch(`${server.url}/v1/adapters/m`, { headers: auth(keys.beta) });
    await expectError(get, 404, 'not_found_error', 'module_not_found', /\bm\b/);

    const deleted = await fetch(`${server.url}/v1/adapters/m`, { method: 'DELETE', headers: auth(keys.beta) });
    await expectError(deleted, 404, 'not_found_error', 'module_not_found');

    const completion = await complete(keys.beta, { model: 'm', prompt: 'Once', max_tokens: 4 });
    await expectError(completion, 404, 'not_found_error', 'model_not_found');

    const betaModels = (await (await fetch(`${server.url}/v1/models`, { headers: auth(keys.beta) })).json()) as { data: { id: string }[] };
    assert.deepEqual(
      betaModels.data.map((model) => model.id),
      ['stories260k'],
    );
    const betaList = (await (await fetch(`${server.url}/v1/adapters`, { headers: auth(keys.beta) })).json()) as { data: unknown[] };
    assert.deepEqual(betaList.data, []);

    // Tenant beta's DELETE must not have touched alpha's module.
    const alphaModels = (await (await fetch(`${server.url}/v1/models`, { headers: auth(keys.alpha) })).json()) as {
      data: { id: string; owned_by: string; kind: string }[];
    };
    const listed = alphaModels.data.find((model) => model.id === 'm');
    assert.equal(listed?.owned_by, 'alpha');
    assert.equal(listed?.kind, 'adapter');
    const alphaGet = await fetch(`${server.url}/v1/adapters/m`, { headers: auth(keys.alpha) });
    assert.equal(alphaGet.status, 200);
  });

  test('same name in two tenants stays separate', async () => {
    const request = { model: 'm', prompt: 'Once upon a time', max_tokens: 60, temperature: 0 };
    const alphaBefore = await completeText(keys.alpha, request);

    const uploaded = await put(keys.beta, 'm', moduleForm({ ...files.seed2, [WEIGHTS_FILE]: scaledWeights(files.seed2[WEIGHTS_FILE], 20) }));
    assert.equal(uploaded.status, 201, await uploaded.text());
    const betaText = await completeText(keys.beta, request);
    const alphaAfter = await completeText(keys.alpha, request);

    // Both tenants' versions are now in the backend's module cache under the same name.
    assert.equal(alphaAfter.text, alphaBefore.text);
    assert.notEqual(betaText.text, alphaBefore.text, 'the two tenants\' modules should generate differently');
  });

  test('admin lists every tenant, users may not', async () => {
    const all = await fetch(`${server.url}/v1/adapters?all=true`, { headers: auth(keys.admin) });
    assert.equal(all.status, 200);
    const listed = ((await all.json()) as { data: { id: string; tenant: string }[] }).data.map((adapter) => `${adapter.tenant}/${adapter.id}`).sort();
    assert.deepEqual(listed, ['alpha/m', 'beta/m']);

    const forbidden = await fetch(`${server.url}/v1/adapters?all=true`, { headers: auth(keys.alpha) });
    await expectError(forbidden, 403, 'permission_error', 'forbidden');
  });

  const badCompletions: { name: string; body: string; code: string; param?: string; message: RegExp }[] = [
    { name: 'invalid JSON', body: '{"model": "stories260k", "prompt": ', code: 'invalid_json', message: /JSON/ },
    { name: 'NaN literal', body: '{"model": "stories260k", "prompt": "x", "temperature": NaN}', code: 'invalid_json', message: /JSON/ },
    {
      name: 'unknown field',
      body: JSON.stringify({ model: 'stories260k', prompt: 'x', frequency_penalty_typo: 1 }),
      code: 'invalid_request',
      message: /frequency_penalty_typo/,
    },
    { name: 'temperature above 2', body: JSON.stringify({ model: 'stories260k', prompt: 'x', temperature: 2.5 }), code: 'invalid_request', param: 'temperature', message: /temperature/ },
    { name: 'negative temperature', body: JSON.stringify({ model: 'stories260k', prompt: 'x', temperature: -0.1 }), code: 'invalid_request', param: 'temperature', message: /temperature/ },
    { name: 'negative max_tokens', body: JSON.stringify({ model: 'stories260k', prompt: 'x', max_tokens: -1 }), code: 'invalid_request', param: 'max_tokens', message: /max_tokens/ },
    { name: 'fractional max_tokens', body: JSON.stringify({ model: 'stories260k', prompt: 'x', max_tokens: 2.5 }), code: 'invalid_request', param: 'max_tokens', message: /max_tokens/ },
    {
      name: 'max_tokens past the context',
      body: JSON.stringify({ model: 'stories260k', prompt: '', max_tokens: STORIES_CONTEXT }),
      code: 'context_length_exceeded',
      message: new RegExp(String(STORIES_CONTEXT)),
    },
  ];
  for (const badCase of badCompletions) {
    test(`completion rejects ${badCase.name}`, async () => {
      const response = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...auth(keys.alpha) },
        body: badCase.body,
      });
      const body = await expectError(response, 400, 'invalid_request_error', badCase.code, badCase.message);
      if (badCase.param !== undefined) assert.equal(body.error.param, badCase.param);
      await assertServing();
    });
  }

  test('oversized JSON body is a 413', async () => {
    // The default --max-json-bytes is 1 MiB, and this body is 1.5 MiB.
    const body = JSON.stringify({ model: 'stories260k', prompt: 'a'.repeat(1.5 * 1024 * 1024), max_tokens: 1 });
    const withLength = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(keys.alpha) },
      body,
    });
    await expectError(withLength, 413, 'invalid_request_error', 'payload_too_large', /1048576/);
    await assertServing();

    // The same body in chunks and without Content-Length.
    const bytes = Buffer.from(body);
    const chunked = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(keys.alpha) },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          for (let start = 0; start < bytes.length; start += 64 * 1024) controller.enqueue(bytes.subarray(start, start + 64 * 1024));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    await expectError(chunked, 413, 'invalid_request_error', 'payload_too_large', /1048576/);
    await assertServing();
  });

  test('traversal names are rejected', async () => {
    const { body, contentType } = await encodeForm(moduleForm(files.seed1));
    const headers = { 'Content-Type': contentType, 'Content-Length': String(body.length), ...auth(keys.alpha) };
    for (const rawName of ['..%2f..%2fetc', '..%2F..%2Fetc', '%2e%2e', '..', '.hidden', 'a%2fb', '%00x']) {
      const response = await rawRequest(server.url, 'PUT', `/v1/adapters/${rawName}`, headers, body);
      const error = await expectError(response, 400, 'invalid_request_error', 'invalid_name');
      assert.equal(error.error.param, 'name', rawName);
      await assertServing();
    }
    for (const rawName of ['..%2f..%2fetc', '%2e%2e']) {
      const get = await rawRequest(server.url, 'GET', `/v1/adapters/${rawName}`, auth(keys.alpha));
      await expectError(get, 400, 'invalid_request_error', 'invalid_name');
    }

    const completion = await complete(keys.alpha, { model: '../../etc', prompt: 'x', max_tokens: 1 });
    await expectError(completion, 404, 'not_found_error', 'model_not_found');

    // Nothing may be written next to the store or the tenant folders.
    assert.deepEqual((await readdir(work)).sort(), ['keys.json', 'modules', 'store', 'stories260k-other']);
    assert.deepEqual((await readdir(storeDir)).filter((entry) => !['.staging', 'alpha', 'beta'].includes(entry)), []);
  });

  test('dots inside a name are allowed', async () => {
    const response = await put(keys.alpha, 'a..b', moduleForm(files.seed1));
    assert.equal(response.status, 201, await response.text());
    const stored = await stat(path.join(storeDir, 'alpha', 'a..b'));
    assert.ok(stored.isDirectory());
    const { text } = await completeText(keys.alpha, { model: 'a..b', prompt: 'Once', max_tokens: 4, temperature: 0 });
    assert.ok(text.length > 0);
    const deleted = await fetch(`${server.url}/v1/adapters/a..b`, { method: 'DELETE', headers: auth(keys.alpha) });
    assert.equal(deleted.status, 200);
  });

  const nanWeights = (): Buffer => {
    const parsed = parseSafetensors(new Uint8Array(files.seed1[WEIGHTS_FILE]), WEIGHTS_FILE);
    const first = [...parsed.tensors.values()][0];
    first.data[0] = Number.NaN;
    return Buffer.from(serializeSafetensors(parsed.tensors));
  };
  const withHeaderByte = (): Buffer => {
    const weights = Buffer.from(files.seed1[WEIGHTS_FILE]);
    // Byte 8 is the opening brace of the JSON header.
    weights[8] = '!'.charCodeAt(0);
    return weights;
  };
  const withHeaderLength = (): Buffer => {
    const weights = Buffer.from(files.seed1[WEIGHTS_FILE]);
    weights.writeBigUInt64LE(BigInt(weights.length * 4), 0);
    return weights;
  };
  const badUploads: { name: string; module: string; files: () => Record<string, Buffer>; code: string; message: RegExp }[] = [
    {
      name: 'truncated weights',
      module: 'truncated',
      files: () => ({ ...files.seed1, [WEIGHTS_FILE]: files.seed1[WEIGHTS_FILE].subarray(0, files.seed1[WEIGHTS_FILE].length - 100) }),
      code: 'invalid_module',
      message: /adapter_model\.safetensors/,
    },
    { name: 'corrupted header JSON', module: 'bad-header', files: () => ({ ...files.seed1, [WEIGHTS_FILE]: withHeaderByte() }), code: 'invalid_module', message: /adapter_model\.safetensors/ },
    {
      name: 'header length past the end',
      module: 'bad-length',
      files: () => ({ ...files.seed1, [WEIGHTS_FILE]: withHeaderLength() }),
      code: 'invalid_module',
      message: /adapter_model\.safetensors/,
    },
    { name: "another model's fingerprint", module: 'foreign', files: () => files.other, code: 'incompatible_module', message: /weights_sha256/ },
    { name: 'NaN value', module: 'nan', files: () => ({ ...files.seed1, [WEIGHTS_FILE]: nanWeights() }), code: 'invalid_module', message: /NaN/ },
  ];
  for (const badCase of badUploads) {
    test(`upload rejects ${badCase.name}`, async () => {
      const response = await put(keys.alpha, badCase.module, moduleForm(badCase.files()));
      await expectError(response, 400, 'invalid_request_error', badCase.code, badCase.message);

      const lookup = await fetch(`${server.url}/v1/adapters/${badCase.module}`, { headers: auth(keys.alpha) });
      await expectError(lookup, 404, 'not_found_error', 'module_not_found');
      const completion = await complete(keys.alpha, { model: badCase.module, prompt: 'x', max_tokens: 1 });
      await expectError(completion, 404, 'not_found_error', 'model_not_found');
      await assert.rejects(stat(path.join(storeDir, 'alpha', badCase.module)), { code: 'ENOENT' });
      await assertServing();
    });
  }

  test('metrics move with traffic', async () => {
    const uploaded = await put(keys.alpha, 'metered', moduleForm(files.seed3));
    assert.equal(uploaded.status, 201);
    const scrape = async (): Promise<string> => {
      const response = await fetch(`${server.url}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
      return response.text();
    };

    const before = await scrape();
    const base = await completeText(keys.alpha, { model: 'stories260k', prompt: 'Once', max_tokens: 6, temperature: 0 });
    const firstUse = await completeText(keys.alpha, { model: 'metered', prompt: 'Once', max_tokens: 6, temperature: 0 });
    const secondUse = await completeText(keys.alpha, { model: 'metered', prompt: 'The dog', max_tokens: 6, temperature: 0 });
    const unauthorized = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    assert.equal(unauthorized.status, 401);
    await unauthorized.body?.cancel();
    const afterText = await scrape();

    const delta = (name: string, labels: Record<string, string> = {}): number => metricValue(afterText, name, labels) - metricValue(before, name, labels);
    const requestsTotal = 'inducer_http_requests_total';
    assert.equal(delta(requestsTotal, { route: '/v1/completions', method: 'POST', status: '200' }), 3);
    assert.equal(delta(requestsTotal, { route: 'unmatched', method: 'POST', status: '401' }), 1);
    assert.equal(delta('inducer_time_to_first_token_seconds_count', { model_kind: 'base' }), 1);
    assert.equal(delta('inducer_time_to_first_token_seconds_count', { model_kind: 'adapter' }), 2);
    assert.equal(delta('inducer_generated_tokens_total', { model_kind: 'base' }), base.completionTokens);
    assert.equal(delta('inducer_generated_tokens_total', { model_kind: 'adapter' }), firstUse.completionTokens + secondUse.completionTokens);
    assert.equal(delta('inducer_module_cache_events_total', { event: 'miss' }), 1);
    assert.equal(delta('inducer_module_cache_events_total', { event: 'hit' }), 1);
    assert.ok(delta('inducer_module_load_bytes_total') > 0);
    // The requests ran one after another, so each had one prefill step (its first token) and one decode step per later token.
    assert.equal(delta('inducer_batch_size_count', { kind: 'prefill' }), 3);
    assert.equal(delta('inducer_batch_size_count', { kind: 'decode' }), base.completionTokens + firstUse.completionTokens + secondUse.completionTokens - 3);
  });

  test('SIGTERM stops the server with exit code 0', async () => {
    const { code, signal } = await server.stop();
    assert.equal(signal, null, server.stderr());
    assert.equal(code, 0, server.stderr());
    assert.deepEqual(server.nonJsonLines, []);
    const messages = server.logs.map((line) => line.msg);
    assert.ok(messages.includes('shutting down'));
    assert.equal(messages.at(-1), 'server stopped');
    // Every rejected request above was a client error, so nothing may have logged at error level (50) or above.
    const errors = server.logs.filter((line) => line.level >= 50);
    assert.deepEqual(errors, []);
  });
});

/** Serves a model folder as repository `repoId` in the Hugging Face Hub's URL layout, with SHA-256 ETags. */
async function startFakeHub(source: string, repoId: string): Promise<{ endpoint: string; requests: string[]; server: Server }> {
  const commit = 'fedcba9876543210fedcba9876543210fedcba98';
  const contents = new Map<string, Buffer>();
  for (const name of await readdir(source)) contents.set(name, await readFile(path.join(source, name)));
  const requests: string[] = [];

  const server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url}`);
    const url = new URL(request.url ?? '/', 'http://hub');
    if (url.pathname === `/api/models/${repoId}/revision/main`) {
      const siblings = [...contents.keys()].map((rfilename) => ({ rfilename }));
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: repoId, sha: commit, siblings }));
      return;
    }
    const resolve = new RegExp(`^/${repoId}/resolve/(main|${commit})/(.+)$`).exec(url.pathname);
    const body = resolve === null ? undefined : contents.get(decodeURIComponent(resolve[2]));
    if (body === undefined) {
      response.writeHead(404, { 'x-error-code': resolve === null ? 'RepoNotFound' : 'EntryNotFound' }).end();
      return;
    }
    const sha256 = createHash('sha256').update(body).digest('hex');
    response.writeHead(200, { etag: `"${sha256}"`, 'x-repo-commit': commit, 'content-length': String(body.length) });
    response.end(request.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, server };
}

describe('inducer serve without --model', () => {
  let work: string;
  let hub: Awaited<ReturnType<typeof startFakeHub>>;
  let server: ServeProcess | undefined;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'inducer-serve-hub-'));
    hub = await startFakeHub(STORIES_DIR, 'openai-community/gpt2');
  });

  after(async () => {
    killIfRunning(server);
    hub.server.closeAllConnections();
    await new Promise<void>((resolve) => hub.server.close(() => resolve()));
    await rm(work, { recursive: true, force: true });
  });

  test('default model is pulled from the hub', async () => {
    const modelsDir = path.join(work, 'models');
    server = await startServe(['--models-dir', modelsDir, '--store', path.join(work, 'store')], cleanEnv({ HF_ENDPOINT: hub.endpoint }));

    const defaultModelLog = server.logs.find((line) => line.repo === 'openai-community/gpt2');
    assert.match(String(defaultModelLog?.msg), /no --model given/);
    const downloaded = await readFile(path.join(modelsDir, 'openai-community', 'gpt2', 'model.safetensors'));
    assert.ok(downloaded.equals(await readFile(path.join(STORIES_DIR, 'model.safetensors'))));
    assert.ok(hub.requests.some((line) => line.startsWith('GET /openai-community/gpt2/resolve/')));

    let ready: Response | null = null;
    for (let attempt = 0; attempt < 50; attempt++) {
      ready = await fetch(`${server.url}/readyz`);
      if (ready.status === 200) break;
      await ready.body?.cancel();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(ready?.status, 200);
    assert.equal(((await ready.json()) as { status: string }).status, 'ready');

    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string; created: number }[] };
    assert.deepEqual(models.data, [{ id: 'openai-community/gpt2', object: 'model', created: models.data[0]?.created, owned_by: 'inducer-serve', kind: 'base' }]);

    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'openai-community/gpt2', prompt: '', max_tokens: 5, temperature: 0 }),
    });
    assert.equal(response.status, 200);
    const completion = (await response.json()) as { model: string; choices: { text: string }[] };
    assert.equal(completion.model, 'openai-community/gpt2');
    assert.equal(completion.choices[0].text.trimStart(), GREEDY_FIVE);

    const { code } = await server.stop();
    assert.equal(code, 0, server.stderr());
    assert.equal(server.logs.at(-1)?.msg, 'server stopped');
  });
});
