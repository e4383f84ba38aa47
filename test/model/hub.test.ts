/**
 * Hub downloads against a local stand-in for the Hugging Face Hub. A node:http server on 127.0.0.1
 * serves a model folder in the hub's URL layout, and a second server plays the CDN that Git LFS
 * files redirect to.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { ensureModel, HubError, pullModel, type PullEvent, type PullOptions } from '../../src/model/hub.js';
import { readSafetensorsFile, serializeSafetensors } from '../../src/model/safetensors.js';
import type { HostTensor } from '../../src/model/tensor.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');
const CLI = path.resolve(here, '../../src/cli.js');
const REPO_ID = 'tester/stories260k';
const COMMIT = '0123456789abcdef0123456789abcdef01234567';
/** Files a pull of stories260k should fetch: config, weights and the tokenizer files it has (not README.md or SHA256SUMS). */
const STORIES_PULLED = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

interface LoggedRequest {
  readonly server: 'hub' | 'cdn';
  readonly method: string;
  readonly url: string;
  readonly authorization: string | undefined;
  readonly range: string | undefined;
}

interface FakeHubOptions {
  /** Folder served as the repository. */
  readonly source: string;
  /** SHA-256 per file, sent as ETag / X-Linked-Etag. */
  readonly sha256: ReadonlyMap<string, string>;
  /** Serve `*.safetensors` through a redirect to a second server, as the hub does for Git LFS files. */
  readonly cdn?: boolean;
  /** Reject requests without `Authorization: Bearer <token>` with 401. */
  readonly token?: string;
  /** Respond to the file list API with 500, so the client has to probe file names. */
  readonly apiDown?: boolean;
  /** Close the connection after this many bytes on the first GET of this file. */
  readonly interruptOnce?: { readonly file: string; readonly afterBytes: number };
  /** Flip one byte of this file in every response body, keeping the announced SHA-256. */
  readonly corrupt?: string;
  /** Respond to Range requests with 200 and the whole file. */
  readonly ignoreRange?: boolean;
  /** Send no response to GET requests for this file. */
  readonly stall?: string;
}

interface FakeHub {
  readonly endpoint: string;
  readonly requests: LoggedRequest[];
  close(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Sends `body` with Range support (`bytes=N-` and `bytes=N-M`), honouring HEAD. */
function sendBytes(request: IncomingMessage, response: ServerResponse, body: Buffer, headers: Record<string, string>, options: FakeHubOptions, file: string, state: { interrupted: boolean }): void {
  const match = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
  let start = 0;
  let end = body.length - 1;
  let status = 200;
  if (match && !options.ignoreRange) {
    start = Number(match[1]);
    end = match[2] === '' ? body.length - 1 : Math.min(Number(match[2]), body.length - 1);
    if (start >= body.length) {
      response.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    status = 206;
    headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
  }
  const slice = body.subarray(start, end + 1);
  response.writeHead(status, { ...headers, 'accept-ranges': 'bytes', 'content-length': String(slice.length) });
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  if (options.interruptOnce?.file === file && !state.interrupted) {
    state.interrupted = true;
    response.write(slice.subarray(0, options.interruptOnce.afterBytes - start), () => response.socket?.destroy());
    return;
  }
  response.end(slice);
}

async function startFakeHub(options: FakeHubOptions): Promise<FakeHub> {
  const requests: LoggedRequest[] = [];
  const state = { interrupted: false };
  const files = new Map<string, Buffer>();
  for (const name of await readdir(options.source)) {
    let bytes = await readFile(path.join(options.source, name));
    if (name === options.corrupt) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length >> 1] ^= 0xff;
    }
    files.set(name, bytes);
  }
  const log = (server: 'hub' | 'cdn', request: IncomingMessage): void => {
    requests.push({ server, method: request.method ?? '', url: request.url ?? '', authorization: request.headers.authorization, range: request.headers.range });
  };

  const cdn = createServer((request, response) => {
    log('cdn', request);
    const name = decodeURIComponent((request.url ?? '').replace(/^\/blobs\//, ''));
    const body = files.get(name);
    if (body === undefined) {
      response.writeHead(404).end();
      return;
    }
    sendBytes(request, response, body, { etag: `"cdn-${name}"` }, options, name, state);
  });
  const cdnOrigin = options.cdn ? await listen(cdn) : '';

  const hub = createServer((request, response) => {
    log('hub', request);

    if (options.token !== undefined && request.headers.authorization !== `Bearer ${options.token}`) {
      response.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid username or password."}');
      return;
    }

    const url = new URL(request.url ?? '/', 'http://hub');
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/(.+?\/.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const repo = api?.[1] ?? resolve?.[1];
    const revision = decodeURIComponent(api?.[2] ?? resolve?.[2] ?? '');
    if (repo !== REPO_ID) {
      response.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end();
      return;
    }
    if (revision !== 'main' && revision !== COMMIT) {
      response.writeHead(404, { 'x-error-code': 'RevisionNotFound' }).end();
      return;
    }

    if (api) {
      if (options.apiDown) {
        response.writeHead(500).end();
        return;
      }
      const siblings = [...files.keys()].map((rfilename) => ({ rfilename }));
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: REPO_ID, sha: COMMIT, siblings }));
      return;
    }

    const name = decodeURIComponent(resolve?.[3] ?? '');
    const body = files.get(name);
    if (body === undefined) {
      response.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': COMMIT }).end();
      return;
    }
    if (request.method === 'GET' && name === options.stall) return;

    const sha256 = options.sha256.get(name) ?? '';
    if (options.cdn && name.endsWith('.safetensors')) {
      response
        .writeHead(302, {
          location: `${cdnOrigin}/blobs/${encodeURIComponent(name)}`,
          'x-repo-commit': COMMIT,
          'x-linked-etag': `"${sha256}"`,
          'x-linked-size': String(body.length),
          'content-length': '0',
        })
        .end();
      return;
    }
    sendBytes(request, response, body, { etag: `"${sha256}"`, 'x-repo-commit': COMMIT }, options, name, state);
  });
  const endpoint = await listen(hub);
  return {
    endpoint,
    requests,
    close: async () => {
      await closeServer(hub);
      if (options.cdn) await closeServer(cdn);
    },
  };
}

/** Reads a `sha256sum` listing into a map from file name to hex digest. */
async function readChecksums(file: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line.trim());
    if (match) sums.set(match[2], match[1]);
  }
  return sums;
}

/** Lists the visible files of a folder, leaving out the download record and other dot files. */
async function visibleFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => !name.startsWith('.')).sort();
}

async function assertSameBytes(actualDir: string, expectedDir: string, names: readonly string[]): Promise<void> {
  for (const name of names) {
    const actual = await readFile(path.join(actualDir, name));
    const expected = await readFile(path.join(expectedDir, name));
    assert.ok(actual.equals(expected), `${name} should equal the source byte for byte`);
  }
}

let workDir: string;
let storiesSums: Map<string, string>;

before(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'inducer-hub-'));
  storiesSums = await readChecksums(path.join(STORIES, 'SHA256SUMS'));
});

after(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Options for a fresh models folder, with no token from the environment and fast retries. */
async function freshOptions(hub: FakeHub, extra: PullOptions = {}): Promise<PullOptions> {
  const modelsDir = await mkdtemp(path.join(workDir, 'models-'));
  return { endpoint: hub.endpoint, modelsDir, token: null, timeoutMs: 5000, maxRetries: 0, retryDelayMs: 0, ...extra };
}

describe('pullModel', () => {
  it('copies stories260k byte for byte through a CDN redirect', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, cdn: true, token: 'secret-token' });
    try {
      const options = await freshOptions(hub, { token: 'secret-token' });
      const result = await pullModel(REPO_ID, options);

      assert.equal(result.dir, path.join(options.modelsDir ?? '', 'tester', 'stories260k'));
      assert.equal(result.commit, COMMIT);
      assert.deepEqual(await visibleFiles(result.dir), STORIES_PULLED);
      await assertSameBytes(result.dir, STORIES, STORIES_PULLED);
      assert.equal(result.files.find((file) => file.name === 'model.safetensors')?.sha256, storiesSums.get('model.safetensors'));

      const pulled = await loadCheckpoint(result.dir);
      const original = await loadCheckpoint(STORIES);
      assert.equal(pulled.parameterCount, original.parameterCount);

      const cdnRequests = hub.requests.filter((entry) => entry.server === 'cdn');
      assert.ok(cdnRequests.length > 0, 'the weights should come from the CDN server');
      assert.ok(cdnRequests.every((entry) => entry.authorization === undefined), 'the token must not be sent to the CDN');
      const resolves = hub.requests.filter((entry) => entry.url.includes('/resolve/'));
      assert.ok(resolves.every((entry) => entry.url.includes(`/resolve/${COMMIT}/`)), 'files should be fetched at the listed commit');
    } finally {
      await hub.close();
    }
  });

  it('skips complete files on a second pull', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      const options = await freshOptions(hub);
      await pullModel(REPO_ID, options);
      hub.requests.length = 0;

      const second = await pullModel(REPO_ID, options);

      assert.deepEqual(second.files.map((file) => file.skipped), STORIES_PULLED.map(() => true));
      assert.deepEqual(hub.requests.filter((entry) => entry.method === 'GET' && entry.url.includes('/resolve/')), []);
    } finally {
      await hub.close();
    }
  });

  it('resumes an interrupted transfer with Range', async () => {
    const cutAt = 300_000;
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, interruptOnce: { file: 'model.safetensors', afterBytes: cutAt } });
    try {
      const options = await freshOptions(hub);
      const partial = path.join(options.modelsDir ?? '', 'tester', 'stories260k', 'model.safetensors.incomplete');

      await assert.rejects(pullModel(REPO_ID, options), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'network');
        assert.match(error.message, /model\.safetensors/);
        assert.match(error.message, /run the pull again to resume/);
        return true;
      });
      // The client may lose the last chunks it received before the reset, so the partial file can be shorter than the cut.
      const partialBytes = (await stat(partial)).size;
      assert.ok(partialBytes > 0 && partialBytes <= cutAt, `partial file has ${partialBytes} bytes, expected 1 to ${cutAt}`);

      hub.requests.length = 0;
      const result = await pullModel(REPO_ID, options);

      const weightGets = hub.requests.filter((entry) => entry.method === 'GET' && entry.url.endsWith('/model.safetensors'));
      assert.deepEqual(weightGets.map((entry) => entry.range), [`bytes=${partialBytes}-`]);
      await assertSameBytes(result.dir, STORIES, ['model.safetensors']);
      await assert.rejects(stat(partial), { code: 'ENOENT' });
    } finally {
      await hub.close();
    }
  });

  it('retries an interrupted transfer within one pull', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, cdn: true, interruptOnce: { file: 'model.safetensors', afterBytes: 100_000 } });
    try {
      const events: PullEvent[] = [];
      const options = await freshOptions(hub, { maxRetries: 2, onProgress: (event) => events.push(event) });

      const result = await pullModel(REPO_ID, options);

      const retries = events.filter((event) => event.type === 'retry');
      assert.equal(retries.length, 1);
      const resumed = events.find((event) => event.type === 'file-start' && event.file === 'model.safetensors' && event.offsetBytes > 0);
      assert.ok(resumed?.type === 'file-start', 'a file-start event should report the resume');
      assert.equal(resumed.sizeBytes, 1044984);
      assert.ok(resumed.offsetBytes <= 100_000, `resumed at ${resumed.offsetBytes}, after the cut at 100000`);
      await assertSameBytes(result.dir, STORIES, STORIES_PULLED);
    } finally {
      await hub.close();
    }
  });

  it('restarts when the server ignores Range', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, ignoreRange: true });
    try {
      const options = await freshOptions(hub);
      const dir = path.join(options.modelsDir ?? '', 'tester', 'stories260k');
      await mkdir(dir, { recursive: true });
      // A partial file whose bytes are not a prefix of the real file: appending to it would corrupt the result.
      await writeFile(path.join(dir, 'model.safetensors.incomplete'), Buffer.alloc(5000, 7));

      const result = await pullModel(REPO_ID, options);

      await assertSameBytes(result.dir, STORIES, ['model.safetensors']);
    } finally {
      await hub.close();
    }
  });

  it('deletes the partial file on a checksum mismatch', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, corrupt: 'model.safetensors' });
    try {
      const options = await freshOptions(hub);
      const dir = path.join(options.modelsDir ?? '', 'tester', 'stories260k');

      await assert.rejects(pullModel(REPO_ID, options), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'integrity');
        assert.match(error.message, /model\.safetensors/);
        assert.ok(error.message.includes(storiesSums.get('model.safetensors') ?? '?'), 'the message should give the expected SHA-256');
        return true;
      });
      assert.deepEqual(await readdir(dir).then((names) => names.filter((name) => name.startsWith('model.'))), []);
    } finally {
      await hub.close();
    }
  });

  it('reports unknown repository and revision as not found', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      await assert.rejects(pullModel('tester/missing', await freshOptions(hub)), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'not-found');
        assert.equal(error.status, 404);
        assert.match(error.message, /repository tester\/missing not found/);
        return true;
      });
      await assert.rejects(pullModel(REPO_ID, await freshOptions(hub, { revision: 'v9' })), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'not-found');
        assert.match(error.message, /revision v9 not found/);
        return true;
      });
    } finally {
      await hub.close();
    }
  });

  it('suggests HF_TOKEN on 401', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, token: 'secret-token' });
    try {
      await assert.rejects(pullModel(REPO_ID, await freshOptions(hub)), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'auth');
        assert.equal(error.status, 401);
        assert.match(error.message, /HF_TOKEN/);
        return true;
      });
      await assert.rejects(pullModel(REPO_ID, await freshOptions(hub, { token: 'wrong' })), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'auth');
        assert.match(error.message, /token in HF_TOKEN was rejected/);
        return true;
      });
    } finally {
      await hub.close();
    }
  });

  it('probes file names when the API is down', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, apiDown: true });
    try {
      const events: PullEvent[] = [];
      const result = await pullModel(REPO_ID, await freshOptions(hub, { onProgress: (event) => events.push(event) }));

      assert.equal(events[0]?.type === 'listing' ? events[0].source : null, 'probe');
      assert.deepEqual(await visibleFiles(result.dir), STORIES_PULLED);
      await assertSameBytes(result.dir, STORIES, STORIES_PULLED);
      assert.equal(result.commit, COMMIT, 'the commit should come from X-Repo-Commit');
    } finally {
      await hub.close();
    }
  });

  it('downloads every shard of a sharded checkpoint', async () => {
    const shardedDir = await mkdtemp(path.join(workDir, 'sharded-'));
    const { tensors } = await readSafetensorsFile(path.join(STORIES, 'model.safetensors'));
    const names = [...tensors.keys()];
    const halves = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
    const weightMap: Record<string, string> = {};
    for (const [i, half] of halves.entries()) {
      const shardName = `model-0000${i + 1}-of-00002.safetensors`;
      const shard = new Map<string, HostTensor>(half.map((name) => [name, tensors.get(name) as HostTensor]));
      await writeFile(path.join(shardedDir, shardName), serializeSafetensors(shard));
      for (const name of half) weightMap[name] = shardName;
    }
    await writeFile(path.join(shardedDir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(path.join(STORIES, name), path.join(shardedDir, name));
    const sums = new Map<string, string>();
    for (const name of await readdir(shardedDir)) sums.set(name, createHash('sha256').update(await readFile(path.join(shardedDir, name))).digest('hex'));

    const hub = await startFakeHub({ source: shardedDir, sha256: sums, cdn: true });
    try {
      const result = await pullModel(REPO_ID, await freshOptions(hub));

      const expected = ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json'];
      assert.deepEqual(await visibleFiles(result.dir), expected);
      await assertSameBytes(result.dir, shardedDir, expected);
      const pulled = await loadCheckpoint(result.dir);
      const original = await loadCheckpoint(STORIES);
      for (const [name, tensor] of original.weights) {
        assert.deepEqual(pulled.weights.get(name)?.data, tensor.data, `tensor ${name} should survive sharding and download`);
      }
    } finally {
      await hub.close();
    }
  });

  it('times out when the server stops answering', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums, stall: 'tokenizer.json' });
    try {
      await assert.rejects(pullModel(REPO_ID, await freshOptions(hub, { timeoutMs: 300 })), (error: unknown) => {
        assert.ok(error instanceof HubError);
        assert.equal(error.kind, 'timeout');
        assert.match(error.message, /tokenizer\.json timed out/);
        return true;
      });
    } finally {
      await hub.close();
    }
  });

  it('reports a refused connection as a network error', async () => {
    const probe = createServer();
    const endpoint = await listen(probe);
    await closeServer(probe);
    const modelsDir = await mkdtemp(path.join(workDir, 'models-'));

    await assert.rejects(pullModel(REPO_ID, { endpoint, modelsDir, token: null, maxRetries: 0 }), (error: unknown) => {
      assert.ok(error instanceof HubError);
      assert.equal(error.kind, 'network');
      assert.match(error.message, /ECONNREFUSED/);
      return true;
    });
  });

  it('rejects an invalid repository id', async () => {
    for (const repoId of ['../etc', 'a/b/c', '', 'name with space']) {
      await assert.rejects(pullModel(repoId, { endpoint: 'http://127.0.0.1:9', token: null }), (error: unknown) => {
        assert.ok(error instanceof HubError, repoId);
        assert.equal(error.kind, 'invalid', repoId);
        return true;
      });
    }
  });
});

describe('ensureModel', () => {
  it('downloads once and then sends no requests', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      const options = await freshOptions(hub);

      const dir = await ensureModel(REPO_ID, options);
      assert.deepEqual(await visibleFiles(dir), STORIES_PULLED);
      hub.requests.length = 0;

      assert.equal(await ensureModel(REPO_ID, options), dir);
      assert.deepEqual(hub.requests, []);
    } finally {
      await hub.close();
    }
  });

  it('downloads again when a file is missing', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      const options = await freshOptions(hub);
      const dir = await ensureModel(REPO_ID, options);
      await rm(path.join(dir, 'tokenizer.json'));
      hub.requests.length = 0;

      await ensureModel(REPO_ID, options);

      await assertSameBytes(dir, STORIES, ['tokenizer.json']);
      const gets = hub.requests.filter((entry) => entry.method === 'GET' && entry.url.includes('/resolve/'));
      assert.deepEqual(gets.map((entry) => entry.url.split('/').pop()), ['tokenizer.json']);
    } finally {
      await hub.close();
    }
  });
});

describe('inducer models pull', () => {
  const run = promisify(execFile);

  async function inducer(env: Record<string, string>, ...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
    // HF_TOKEN from the caller's environment would change the 401 messages, so the child gets only what the test sets.
    const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, ...env };
    try {
      const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: childEnv, timeout: 30_000 });
      return { stdout, stderr, code: 0 };
    } catch (error) {
      const failure = error as { stdout: string; stderr: string; code: number };
      return { stdout: failure.stdout, stderr: failure.stderr, code: failure.code };
    }
  }

  it('prints the model folder and one line per file', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      const modelsDir = await mkdtemp(path.join(workDir, 'cli-'));

      const result = await inducer({ HF_ENDPOINT: hub.endpoint }, 'models', 'pull', REPO_ID, '--models-dir', modelsDir);

      assert.equal(result.code, 0, result.stderr);
      const dir = path.join(modelsDir, 'tester', 'stories260k');
      assert.equal(result.stdout, `${dir}\n`);
      // 1044984 bytes / 1024 = 1020.49 KiB.
      assert.match(result.stderr, /^model\.safetensors: downloading 1020\.5 KiB$/m);
      assert.match(result.stderr, /^config\.json: done \(485 B\)$/m);
      await assertSameBytes(dir, STORIES, STORIES_PULLED);
    } finally {
      await hub.close();
    }
  });

  it('exits with 1 and a message on an unknown revision', async () => {
    const hub = await startFakeHub({ source: STORIES, sha256: storiesSums });
    try {
      const modelsDir = await mkdtemp(path.join(workDir, 'cli-'));

      const result = await inducer({ HF_ENDPOINT: hub.endpoint, INDUCER_MODELS_DIR: modelsDir }, 'models', 'pull', REPO_ID, '--revision', 'v9');

      assert.equal(result.code, 1);
      assert.equal(result.stdout, '');
      assert.match(result.stderr, /^error: revision v9 not found in repository tester\/stories260k/m);
    } finally {
      await hub.close();
    }
  });
});
