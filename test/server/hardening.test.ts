import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../../src/adapters/module-files.js';
import { FakeBackend, loadStories, makeModuleDir, moduleForm, parseSse, SCRIPT_TEXT, startServer, type TestServer } from './helpers.js';

interface ErrorJson {
  error: { message: string; type: string; param: string | null; code: string | null };
}

interface LogprobsJson {
  tokens: string[];
  token_logprobs: (number | null)[];
  text_offset: number[];
}

/** Log lines of the server, parsed from pino's JSON output. */
const logLines: { level: number; msg: string }[] = [];
const logSink = new Writable({
  write(chunk: Buffer, _encoding, callback) {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') logLines.push(JSON.parse(line));
    callback();
  },
});

/** Pino's numeric levels. */
const WARN_LEVEL = 40;
const ERROR_LEVEL = 50;

describe('server hardening against malformed input', () => {
  let server: TestServer;
  let backend: FakeBackend;
  let work: string;
  let files: Record<string, Buffer>;
  let config: Record<string, unknown>;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'inducer-hardening-'));
    const moduleDir = await makeModuleDir(work, 'plain');
    files = {
      [ADAPTER_CONFIG_FILE]: await readFile(path.join(moduleDir, ADAPTER_CONFIG_FILE)),
      [ADAPTER_WEIGHTS_FILE]: await readFile(path.join(moduleDir, ADAPTER_WEIGHTS_FILE)),
    };
    config = JSON.parse(files[ADAPTER_CONFIG_FILE].toString('utf8'));
    server = await startServer({ limits: { maxUploadBytes: 256 * 1024 }, logger: pino({ level: 'debug' }, logSink) });
    backend = server.backend as FakeBackend;
  });
  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  async function complete(body: unknown): Promise<Response> {
    return fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  }

  async function upload(name: string, configChange: ((copy: Record<string, unknown>) => void) | null): Promise<Response> {
    const copy = structuredClone(config);
    configChange?.(copy);
    const form = moduleForm({ [ADAPTER_CONFIG_FILE]: JSON.stringify(copy), [ADAPTER_WEIGHTS_FILE]: files[ADAPTER_WEIGHTS_FILE] });
    return fetch(`${server.url}/v1/adapters/${name}`, { method: 'PUT', body: form });
  }

  test('unterminated multipart body is a 400', async () => {
    const body = '--xyz\r\nContent-Disposition: form-data; name="adapter_config.json"; filename="a"\r\n\r\n{}';
    const response = await fetch(`${server.url}/v1/adapters/m1`, {
      method: 'PUT',
      headers: { 'Content-Type': 'multipart/form-data; boundary=xyz' },
      body,
    });
    assert.equal(response.status, 400);
    const json = (await response.json()) as ErrorJson;
    assert.equal(json.error.code, 'invalid_request');
    assert.match(json.error.message, /multipart/);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });

  test('template with many placeholders is rejected', async () => {
    const response = await upload('many-placeholders', (copy) => {
      copy.task = { prompt_template: '{prompt}'.repeat(10_000) };
    });
    assert.equal(response.status, 400);
    const json = (await response.json()) as ErrorJson;
    assert.equal(json.error.code, 'invalid_module');
    assert.equal(json.error.param, ADAPTER_CONFIG_FILE);
    assert.match(json.error.message, /prompt_template/);
  });

  test('template with two placeholders is rejected', async () => {
    const response = await upload('two-placeholders', (copy) => {
      copy.task = { prompt_template: 'A: {prompt} B: {prompt}' };
    });
    assert.equal(response.status, 400);
    assert.match(((await response.json()) as ErrorJson).error.message, /exactly once/);
  });

  test('overlong template is rejected', async () => {
    const response = await upload('long-template', (copy) => {
      copy.task = { prompt_template: `${'x'.repeat(9000)}{prompt}` };
    });
    assert.equal(response.status, 400);
    assert.match(((await response.json()) as ErrorJson).error.message, /8192/);
  });

  test('too many module stop strings are rejected', async () => {
    const many = await upload('many-stops', (copy) => {
      copy.task = { stop: Array.from({ length: 1000 }, (_, i) => `s${i}`) };
    });
    assert.equal(many.status, 400);
    assert.match(((await many.json()) as ErrorJson).error.message, /task\.stop/);
    const long = await upload('long-stop', (copy) => {
      copy.task = { stop: ['y'.repeat(257)] };
    });
    assert.equal(long.status, 400);
    assert.match(((await long.json()) as ErrorJson).error.message, /256/);
  });

  test('prompt with $ patterns fills the template literally', async () => {
    const stored = await upload('dollar', (copy) => {
      copy.task = { prompt_template: 'Q: {prompt}\nA:' };
    });
    assert.equal(stored.status, 201);
    const response = await complete({ model: 'dollar', prompt: "costs $& and $' more", max_tokens: 1, echo: true });
    assert.equal(response.status, 200);
    const json = await response.json();
    assert.equal(json.choices[0].text.startsWith("Q: costs $& and $' more\nA:"), true);
  });

  test('huge prompt is rejected before tokenizing', async () => {
    const model = await loadStories();
    const tokenizer = model.tokenizer;
    const encode = tokenizer.encode;
    let longestEncoded = 0;
    tokenizer.encode = (text, options) => {
      longestEncoded = Math.max(longestEncoded, text.length);
      return encode.call(tokenizer, text, options);
    };
    try {
      // stories260k has 512 positions; at most 64 characters per token allow 32768 characters.
      const response = await complete({ model: 'stories260k', prompt: 'a'.repeat(500_000) });
      assert.equal(response.status, 400);
      const json = (await response.json()) as ErrorJson;
      assert.equal(json.error.code, 'context_length_exceeded');
      assert.equal(json.error.param, 'prompt');
      assert.match(json.error.message, /500000 characters/);
      assert.equal(longestEncoded, 0, 'the prompt was not tokenized');
    } finally {
      tokenizer.encode = encode;
    }
  });

  test('template expansion counts toward the prompt limit', async () => {
    const stored = await upload('wide-template', (copy) => {
      copy.task = { prompt_template: `${'b'.repeat(8000)}{prompt}` };
    });
    assert.equal(stored.status, 201);
    const response = await complete({ model: 'wide-template', prompt: 'c'.repeat(30_000) });
    assert.equal(response.status, 400);
    const json = (await response.json()) as ErrorJson;
    assert.equal(json.error.code, 'context_length_exceeded');
    assert.match(json.error.message, /38000 characters/);
  });

  test('bad percent-encoding in a name is a 400', async () => {
    const cases: [string, string][] = [
      ['GET', '/v1/adapters/%ff'],
      ['DELETE', '/v1/adapters/%E0%A4%A'],
      ['PUT', '/v1/adapters/%E0%A4%A'],
    ];
    for (const [method, urlPath] of cases) {
      const response = await fetch(`${server.url}${urlPath}`, { method });
      assert.equal(response.status, 400, `${method} ${urlPath}`);
      const json = (await response.json()) as ErrorJson;
      assert.equal(json.error.code, 'invalid_name');
      assert.equal(json.error.param, 'name');
    }
  });

  test('upload errors name files, not server paths', async () => {
    const form = moduleForm({ [ADAPTER_CONFIG_FILE]: '{"method": ', [ADAPTER_WEIGHTS_FILE]: files[ADAPTER_WEIGHTS_FILE] });
    const response = await fetch(`${server.url}/v1/adapters/badjson`, { method: 'PUT', body: form });
    assert.equal(response.status, 400);
    const { message } = ((await response.json()) as ErrorJson).error;
    assert.match(message, /^invalid module upload: adapter_config\.json is not valid JSON/);
    assert.ok(!message.includes(server.storeDir), message);
    assert.ok(!message.includes('.staging'), message);
  });

  test('wrong tensor shape names the weights file', async () => {
    const response = await upload('wrong-rank', (copy) => {
      copy.value_rank = 8;
    });
    assert.equal(response.status, 400);
    const json = (await response.json()) as ErrorJson;
    assert.equal(json.error.code, 'invalid_module');
    assert.equal(json.error.param, ADAPTER_WEIGHTS_FILE);
    assert.match(json.error.message, /^invalid module upload: adapter_model\.safetensors: /);
  });

  test('echo logprobs tokens match the text', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'Hello there', max_tokens: 3, logprobs: 0, echo: true });
    const json = await response.json();
    const text: string = json.choices[0].text;
    const logprobs = json.choices[0].logprobs as LogprobsJson;
    assert.equal(text, 'Hello there Once upon a');
    assert.ok(!logprobs.tokens.includes('<s>'), `tokens ${JSON.stringify(logprobs.tokens)}`);
    assert.equal(logprobs.tokens.join(''), text);
    logprobs.tokens.forEach((token, i) => {
      assert.equal(text.slice(logprobs.text_offset[i], logprobs.text_offset[i] + token.length), token, `token ${i}`);
    });
    // Every prompt token after BOS has the fake backend's prompt logprob -0.5; the 3 generated ones have -1.
    const numPromptTokens = logprobs.tokens.length - 3;
    assert.deepEqual(logprobs.token_logprobs, [...Array<number>(numPromptTokens).fill(-0.5), -1, -1, -1]);
  });

  test('logprob offsets ignore text held for a stop string', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'Hello', max_tokens: 4, logprobs: 0, stop: 'upon a time,X' });
    const json = await response.json();
    assert.equal(json.choices[0].text, ' Once upon a time');
    const logprobs = json.choices[0].logprobs as LogprobsJson;
    assert.deepEqual(logprobs.tokens, [' Once', ' upon', ' a', ' time']);
    assert.deepEqual(logprobs.text_offset, [0, 5, 10, 12]);
  });

  test('stream echo logprobs match the text', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'Hello', max_tokens: 2, logprobs: 0, echo: true, stream: true });
    const chunks = parseSse(await response.text())
      .slice(0, -1)
      .map((event) => JSON.parse(event));
    const choices = chunks.flatMap((chunk) => chunk.choices);
    const text = choices.map((choice: { text: string }) => choice.text).join('');
    const tokens = choices.flatMap((choice: { logprobs: LogprobsJson | null }) => choice.logprobs?.tokens ?? []);
    assert.equal(text, 'Hello Once upon');
    assert.equal(tokens.join(''), text);
  });

  test('largest seed with n wraps around', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'a', max_tokens: 1, seed: Number.MAX_SAFE_INTEGER, n: 3 });
    assert.equal(response.status, 200);
    const seeds = backend.submitted.slice(-3).map((job) => job.sampling.seed);
    assert.deepEqual(seeds, [Number.MAX_SAFE_INTEGER, 0, 1]);
  });

  test('client errors from the backend log as warnings', async () => {
    backend.failure = { status: 400, code: 'invalid_sampling', message: 'invalid sampling parameter seed' };
    const first = logLines.length;
    try {
      const response = await complete({ model: 'stories260k', prompt: 'a', max_tokens: 1 });
      assert.equal(response.status, 400);
    } finally {
      backend.failure = null;
    }
    const lines = logLines.slice(first).filter((line) => line.msg === 'completion job failed');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].level, WARN_LEVEL);
    assert.ok(logLines.slice(first).every((line) => line.level < ERROR_LEVEL));
  });

  test('total upload size is limited while streaming', async () => {
    // Two parts of 150 KiB each stay under the 256 KiB limit per file but exceed it together.
    const boundary = 'limit-boundary';
    const part = (field: string): string =>
      `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${field}"\r\n\r\n${'z'.repeat(150 * 1024)}\r\n`;
    const text = `${part(ADAPTER_CONFIG_FILE)}${part(ADAPTER_WEIGHTS_FILE)}--${boundary}--\r\n`;
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let offset = 0; offset < bytes.length; offset += 8192) controller.enqueue(bytes.subarray(offset, offset + 8192));
        controller.close();
      },
    });
    const response = await fetch(`${server.url}/v1/adapters/chunked`, {
      method: 'PUT',
      headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` },
      body,
      duplex: 'half',
    } as RequestInit);
    assert.equal(response.status, 413);
    const json = (await response.json()) as ErrorJson;
    assert.equal(json.error.code, 'payload_too_large');
    assert.match(json.error.message, /262144 bytes/);
  });

  test('null body is not called invalid JSON', async () => {
    const response = await complete('null');
    assert.equal(response.status, 400);
    const { message } = ((await response.json()) as ErrorJson).error;
    assert.doesNotMatch(message, /not valid JSON|invalid JSON/);
    assert.match(message, /JSON object/);
  });

  test('seed of 2^60 gives one message', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'a', seed: 2 ** 60 });
    assert.equal(response.status, 400);
    const { message, param } = ((await response.json()) as ErrorJson).error;
    assert.equal(param, 'seed');
    assert.equal(message.split('seed:').length - 1, 1, message);
  });

  test('queue-full message says retry once', async () => {
    backend.maxQueue = 0;
    try {
      const response = await complete({ model: 'stories260k', prompt: 'a', max_tokens: 1 });
      assert.equal(response.status, 429);
      const { message } = ((await response.json()) as ErrorJson).error;
      assert.equal(message.split('retry').length - 1, 1, message);
    } finally {
      backend.maxQueue = Number.POSITIVE_INFINITY;
    }
  });

  test('token-id prompts are reported as unsupported', async () => {
    for (const prompt of [[1, 2, 3], [[1, 2]]]) {
      const response = await complete({ model: 'stories260k', prompt });
      assert.equal(response.status, 400);
      const { message, param } = ((await response.json()) as ErrorJson).error;
      assert.equal(param, 'prompt');
      assert.match(message, /token ids are not supported/);
    }
  });

  test('missing field is called missing', async () => {
    const response = await complete({ prompt: 'a' });
    assert.equal(response.status, 400);
    const { message, param } = ((await response.json()) as ErrorJson).error;
    assert.equal(param, 'model');
    assert.doesNotMatch(message, /undefined/);
    assert.match(message, /model: missing/);
  });

  test('long invalid names are shortened', async () => {
    const name = 'x'.repeat(5000);
    const lookup = await fetch(`${server.url}/v1/adapters/-${name}`);
    assert.equal(lookup.status, 400);
    const lookupMessage = ((await lookup.json()) as ErrorJson).error.message;
    assert.ok(lookupMessage.length < 400, `message of ${lookupMessage.length} characters`);
    assert.match(lookupMessage, /5001 characters/);
    const model = await complete({ model: name, prompt: 'a' });
    assert.equal(model.status, 404);
    const modelMessage = ((await model.json()) as ErrorJson).error.message;
    assert.ok(modelMessage.length < 400, `message of ${modelMessage.length} characters`);
  });

  test('server still answers after the attacks', async () => {
    const response = await complete({ model: 'stories260k', prompt: 'Hello', max_tokens: 100 });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).choices[0].text, ` ${SCRIPT_TEXT}`);
  });
});
