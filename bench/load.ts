/**
 * Load test of the HTTP server: uploads modules, then sends completions from many concurrent
 * clients and, as a baseline, the same kind of requests one at a time. Prints request and token
 * throughput, latency and time-to-first-token percentiles, the concurrency speed-up, and the
 * batch-size and module-cache numbers scraped from `/metrics`. Exits with status 1 if any request
 * failed or was not sent before the time limit.
 *
 *   npx tsc -p . && node dist/bench/load.js [--requests 320] [--concurrency 32] [--time-limit 120]
 *     [--baseline-requests 32] [--modules 8] [--max-tokens 32] [--url http://127.0.0.1:PORT]
 *
 * Without `--url` it starts `inducer serve` itself on 127.0.0.1 with a free port and a temporary
 * module store, and stops it with SIGTERM at the end. With `--url` it uses a running server,
 * which must listen on 127.0.0.1, and deletes the modules it uploaded when it finishes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pushModule } from '../src/cli/push-command.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../src/cli.js');
const STORIES = path.resolve(here, '../../../shared/models/stories260k');

/** Time the spawned server gets to load the model and start listening. */
const SERVER_START_TIMEOUT_MS = 120_000;
/** Time the spawned server gets to drain and exit after SIGTERM, longer than the server's default 30 s shutdown timeout. */
const SERVER_STOP_TIMEOUT_MS = 40_000;
/** Every fifth request goes to the base model, the others to the modules in turn. */
const BASE_MODEL_EVERY = 5;
/** Prompt openings the requests cycle through; all are short stories in the style stories260k was trained on. */
const PROMPTS = [
  'Once upon a time, there was a little girl named Lily.',
  'One day, a big dog went to the park.',
  'Tom had a red ball. He liked to',
  'The sun was shining and the birds were singing.',
  'Sue and her mom went to the store to buy',
  'There was a small cat who lived in a',
  'Ben wanted to play with his friend, but',
];

/** Error for an invalid option, a server that failed to start, or a failed setup request. */
export class LoadTestError extends Error {
  override readonly name = 'LoadTestError';
}

interface LoadOptions {
  url: string | null;
  model: string;
  requests: number;
  concurrency: number;
  timeLimitSeconds: number;
  baselineRequests: number;
  modules: number;
  maxTokens: number;
  streamEvery: number;
  serveArgs: string[];
}

/** One planned completion request. */
interface PlannedRequest {
  index: number;
  model: string;
  prompt: string;
  stream: boolean;
  temperature: number;
  seed: number | null;
}

/** Outcome of one request. `ttftMs` is set for streamed requests that received a token. */
interface RequestResult {
  request: PlannedRequest;
  ok: boolean;
  status: number;
  latencyMs: number;
  ttftMs: number | null;
  completionTokens: number;
  errorBody: string | null;
}

interface PhaseResult {
  name: string;
  wallSeconds: number;
  results: RequestResult[];
  notSent: number;
}

function parsePositiveInteger(name: string, text: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new LoadTestError(`--${name} must be an integer from 1 to ${max}, got "${text}"`);
  }
  return value;
}

/** Accepts only http URLs on 127.0.0.1, so the load never leaves the machine. */
function parseLoopbackUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new LoadTestError(`--url "${text}" is not a valid URL; pass e.g. http://127.0.0.1:8000`);
  }
  if (url.protocol !== 'http:' || url.hostname !== '127.0.0.1') {
    throw new LoadTestError(`--url must be http://127.0.0.1:PORT, got "${text}"; this load test only targets a server on this machine`);
  }
  return url.origin;
}

function parseOptions(argv: string[]): LoadOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      model: { type: 'string', default: STORIES },
      requests: { type: 'string', default: '320' },
      concurrency: { type: 'string', default: '32' },
      'time-limit': { type: 'string', default: '120' },
      'baseline-requests': { type: 'string', default: '32' },
      modules: { type: 'string', default: '8' },
      'max-tokens': { type: 'string', default: '32' },
      'stream-every': { type: 'string', default: '2' },
      'serve-arg': { type: 'string', multiple: true, default: [] },
    },
    strict: true,
  });
  return {
    url: values.url === undefined ? null : parseLoopbackUrl(values.url),
    model: path.resolve(values.model),
    requests: parsePositiveInteger('requests', values.requests, 100_000),
    concurrency: parsePositiveInteger('concurrency', values.concurrency, 1024),
    timeLimitSeconds: parsePositiveInteger('time-limit', values['time-limit'], 3600),
    baselineRequests: parsePositiveInteger('baseline-requests', values['baseline-requests'], 100_000),
    modules: parsePositiveInteger('modules', values.modules, 64),
    maxTokens: parsePositiveInteger('max-tokens', values['max-tokens'], 512),
    streamEvery: parsePositiveInteger('stream-every', values['stream-every'], 1000),
    serveArgs: values['serve-arg'],
  };
}

/** A server started by this script; `recentLogs` keeps its last log lines for error messages. */
interface SpawnedServer {
  child: ChildProcess;
  url: string;
  recentLogs: string[];
}

/** Starts `inducer serve` on 127.0.0.1 with port 0 and reads the bound port from its "server listening" log line. */
async function startServer(options: LoadOptions, store: string): Promise<SpawnedServer> {
  const args = [CLI, 'serve', '--model', options.model, '--host', '127.0.0.1', '--port', '0', '--store', store, '--log-level', 'info', ...options.serveArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const recentLogs: string[] = [];
  const remember = (line: string): void => {
    recentLogs.push(line);
    if (recentLogs.length > 40) recentLogs.shift();
  };
  createInterface({ input: child.stderr! }).on('line', remember);

  const url = await new Promise<string>((resolve, reject) => {
    const fail = (message: string): void => {
      clearTimeout(timer);
      reject(new LoadTestError(`${message}; last server output:\n${recentLogs.join('\n')}`));
    };
    const timer = setTimeout(() => fail(`server did not start listening within ${SERVER_START_TIMEOUT_MS / 1000} s`), SERVER_START_TIMEOUT_MS);
    child.once('exit', (code, signal) => fail(`server exited during start-up with code ${code} (signal ${signal})`));
    child.once('error', (error) => fail(`failed to start ${process.execPath} ${args.join(' ')}: ${error.message}`));
    // The stdout reader stays attached for the whole run so the pipe never fills and blocks the server.
    createInterface({ input: child.stdout! }).on('line', (line) => {
      remember(line);
      let entry: { msg?: unknown; address?: { port?: unknown } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg === 'server listening' && typeof entry.address?.port === 'number') {
        clearTimeout(timer);
        resolve(`http://127.0.0.1:${entry.address.port}`);
      }
    });
  });
  return { child, url, recentLogs };
}

/** Sends SIGTERM and waits for the exit, or sends SIGKILL to the same process if it does not exit in time. Returns the exit code. */
async function stopServer(server: SpawnedServer): Promise<number | null> {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    process.stderr.write(`server did not exit ${SERVER_STOP_TIMEOUT_MS / 1000} s after SIGTERM; sending SIGKILL to pid ${child.pid}\n`);
    child.kill('SIGKILL');
  }, SERVER_STOP_TIMEOUT_MS);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** Writes a module with `inducer adapter init` (default initialisation, so it changes the output) in `out`. */
async function createModule(model: string, out: string, seed: number): Promise<void> {
  const child = spawn(process.execPath, [CLI, 'adapter', 'init', '--model', model, '--out', out, '--seed', String(seed)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0) throw new LoadTestError(`inducer adapter init --out ${out} --seed ${seed} failed with code ${code}: ${stderr.trim()}`);
}

async function fetchJson(url: string, init?: RequestInit): Promise<unknown> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const text = await response.text();
  if (!response.ok) throw new LoadTestError(`${init?.method ?? 'GET'} ${url} failed with status ${response.status}: ${text.slice(0, 500)}`);
  return JSON.parse(text) as unknown;
}

async function baseModelId(url: string): Promise<string> {
  const list = (await fetchJson(`${url}/v1/models`)) as { data?: { id: string; kind?: string }[] };
  const base = list.data?.find((entry) => entry.kind === 'base');
  if (base === undefined) throw new LoadTestError(`GET ${url}/v1/models listed no model of kind "base"`);
  return base.id;
}

/** Builds request `index` of a phase: every fifth goes to the base model, the rest to the modules round-robin. */
function planRequest(index: number, baseModel: string, modules: readonly string[], streamEvery: number): PlannedRequest {
  const toBase = index % BASE_MODEL_EVERY === BASE_MODEL_EVERY - 1;
  const moduleIndex = index - Math.floor(index / BASE_MODEL_EVERY);
  const sampled = index % 3 === 2;
  return {
    index,
    model: toBase ? baseModel : modules[moduleIndex % modules.length],
    prompt: PROMPTS[index % PROMPTS.length],
    stream: index % streamEvery === 0,
    temperature: sampled ? 0.8 : 0,
    seed: sampled ? index : null,
  };
}

/** Reads an SSE body, returning the time of the first event with a choice, the completion tokens from the usage chunk and any error event. */
async function readStream(body: ReadableStream<Uint8Array>, started: number): Promise<{ ttftMs: number | null; completionTokens: number; error: string | null }> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ttftMs: number | null = null;
  let completionTokens = 0;
  let error: string | null = null;
  let done = false;
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let boundary = buffer.indexOf('\n\n');
    while (boundary !== -1) {
      const event = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      boundary = buffer.indexOf('\n\n');
      if (!event.startsWith('data: ')) continue;
      const data = event.slice('data: '.length);
      if (data === '[DONE]') {
        done = true;
        continue;
      }
      const parsed = JSON.parse(data) as { error?: unknown; choices?: unknown[]; usage?: { completion_tokens?: number } };
      if (parsed.error !== undefined) error = data;
      if (ttftMs === null && (parsed.choices?.length ?? 0) > 0) ttftMs = performance.now() - started;
      if (typeof parsed.usage?.completion_tokens === 'number') completionTokens = parsed.usage.completion_tokens;
    }
  }
  if (!done && error === null) error = 'stream ended without "data: [DONE]"';
  return { ttftMs, completionTokens, error };
}

async function sendRequest(url: string, request: PlannedRequest, maxTokens: number, signal: AbortSignal): Promise<RequestResult> {
  const body = {
    model: request.model,
    prompt: request.prompt,
    max_tokens: maxTokens,
    temperature: request.temperature,
    ...(request.seed === null ? {} : { seed: request.seed }),
    ...(request.stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  };
  const started = performance.now();
  const failed = (status: number, errorBody: string): RequestResult => ({
    request,
    ok: false,
    status,
    latencyMs: performance.now() - started,
    ttftMs: null,
    completionTokens: 0,
    errorBody,
  });
  try {
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    });
    if (!response.ok || response.body === null) return failed(response.status, await response.text());
    if (request.stream) {
      const streamed = await readStream(response.body, started);
      if (streamed.error !== null) return failed(response.status, streamed.error);
      return { request, ok: true, status: response.status, latencyMs: performance.now() - started, ttftMs: streamed.ttftMs, completionTokens: streamed.completionTokens, errorBody: null };
    }
    const json = (await response.json()) as { usage?: { completion_tokens?: number } };
    return { request, ok: true, status: response.status, latencyMs: performance.now() - started, ttftMs: null, completionTokens: json.usage?.completion_tokens ?? 0, errorBody: null };
  } catch (cause) {
    return failed(0, `request failed: ${(cause as Error).message}`);
  }
}

/**
 * Runs `count` requests with `concurrency` clients. Clients stop taking new requests at the time
 * limit, and requests still running then are aborted and count as failed.
 */
async function runPhase(name: string, url: string, count: number, concurrency: number, timeLimitSeconds: number, plan: (index: number) => PlannedRequest, maxTokens: number): Promise<PhaseResult> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error(`time limit of ${timeLimitSeconds} s reached`)), timeLimitSeconds * 1000);
  const results: RequestResult[] = [];
  let next = 0;
  const started = performance.now();
  const client = async (): Promise<void> => {
    while (next < count && !deadline.signal.aborted) {
      const request = plan(next);
      next += 1;
      results.push(await sendRequest(url, request, maxTokens, deadline.signal));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, client));
  clearTimeout(timer);
  return { name, wallSeconds: (performance.now() - started) / 1000, results, notSent: count - next };
}

/** Returns the nearest-rank percentile of unsorted values, or NaN for an empty list. */
function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

interface PhaseSummary {
  requestsPerSecond: number;
  tokensPerSecond: number;
}

function printPhase(phase: PhaseResult, concurrency: number): PhaseSummary {
  const succeeded = phase.results.filter((result) => result.ok);
  const latencies = succeeded.map((result) => result.latencyMs);
  const ttfts = succeeded.flatMap((result) => (result.ttftMs === null ? [] : [result.ttftMs]));
  const tokens = succeeded.reduce((sum, result) => sum + result.completionTokens, 0);
  const summary = { requestsPerSecond: succeeded.length / phase.wallSeconds, tokensPerSecond: tokens / phase.wallSeconds };
  const streamed = phase.results.filter((result) => result.request.stream).length;
  const format = (ms: number): string => (Number.isNaN(ms) ? 'n/a' : `${ms.toFixed(1)} ms`);

  console.log(`\n== ${phase.name}: ${concurrency} client${concurrency === 1 ? '' : 's'} ==`);
  console.log(`requests: ${phase.results.length} sent (${streamed} streamed), ${succeeded.length} succeeded, ${phase.results.length - succeeded.length} errors, ${phase.notSent} not sent because of the time limit`);
  console.log(`wall time: ${phase.wallSeconds.toFixed(2)} s`);
  console.log(`generated tokens: ${tokens}`);
  console.log(`throughput: ${summary.requestsPerSecond.toFixed(2)} requests/s, ${summary.tokensPerSecond.toFixed(1)} generated tokens/s`);
  console.log(`latency: p50 ${format(percentile(latencies, 50))}, p99 ${format(percentile(latencies, 99))}, max ${format(percentile(latencies, 100))}`);
  console.log(`time to first token (${ttfts.length} streamed requests): p50 ${format(percentile(ttfts, 50))}, p99 ${format(percentile(ttfts, 99))}`);
  for (const result of phase.results.filter((entry) => !entry.ok).slice(0, 20)) {
    console.log(`  error: request ${result.request.index} (model ${result.request.model}, stream ${result.request.stream}) status ${result.status}: ${result.errorBody?.slice(0, 500)}`);
  }
  return summary;
}

/** Fetches `/metrics` and parses the Prometheus text into a map from `name{labels}` to the sample value. */
async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(30_000) });
  if (!response.ok) throw new LoadTestError(`GET ${url}/metrics failed with status ${response.status}`);
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

function metricDelta(after: Map<string, number>, before: Map<string, number>, key: string): number {
  return (after.get(key) ?? 0) - (before.get(key) ?? 0);
}

/** Prints the batch-size histogram (mean rows per step and bucket counts) and module-cache events between two scrapes. */
function printMetrics(label: string, after: Map<string, number>, before: Map<string, number>): void {
  console.log(`\n-- /metrics, ${label} --`);
  for (const kind of ['decode', 'prefill']) {
    const steps = metricDelta(after, before, `inducer_batch_size_count{kind="${kind}"}`);
    const rows = metricDelta(after, before, `inducer_batch_size_sum{kind="${kind}"}`);
    const buckets: string[] = [];
    let previous = 0;
    for (const bound of ['1', '2', '4', '8', '16', '32', '64', '128']) {
      const cumulative = metricDelta(after, before, `inducer_batch_size_bucket{le="${bound}",kind="${kind}"}`);
      if (cumulative - previous > 0) buckets.push(`≤${bound}: ${cumulative - previous}`);
      previous = cumulative;
    }
    const mean = steps === 0 ? 'n/a' : (rows / steps).toFixed(2);
    console.log(`${kind} steps: ${steps}, mean rows per step ${mean}${buckets.length > 0 ? ` (${buckets.join(', ')})` : ''}`);
  }
  const cache = ['hit', 'miss', 'eviction'].map((event) => `${event} ${metricDelta(after, before, `inducer_module_cache_events_total{event="${event}"}`)}`);
  console.log(`module cache: ${cache.join(', ')}`);
  const ttftCount = ['base', 'adapter'].reduce((sum, kind) => sum + metricDelta(after, before, `inducer_time_to_first_token_seconds_count{model_kind="${kind}"}`), 0);
  const ttftSum = ['base', 'adapter'].reduce((sum, kind) => sum + metricDelta(after, before, `inducer_time_to_first_token_seconds_sum{model_kind="${kind}"}`), 0);
  if (ttftCount > 0) console.log(`server-side time to first token, mean over ${ttftCount} sequences: ${((ttftSum / ttftCount) * 1000).toFixed(1)} ms`);
}

async function run(options: LoadOptions, workDir: string): Promise<boolean> {
  let server: SpawnedServer | null = null;
  let allOk = true;
  const uploaded: string[] = [];
  let url = options.url ?? '';
  try {
    if (options.url === null) {
      server = await startServer(options, path.join(workDir, 'store'));
      url = server.url;
    }
    console.log(`server: ${url}${server === null ? ' (given by --url)' : ` (started by this script, pid ${server.child.pid})`}`);

    const baseModel = await baseModelId(url);
    const moduleNames = Array.from({ length: options.modules }, (_, i) => `load-test-${i}`);
    for (const [i, name] of moduleNames.entries()) {
      const dir = path.join(workDir, 'modules', name);
      await createModule(options.model, dir, 1000 + i);
      const stored = await pushModule({ server: url, apiKey: null, name, dir });
      uploaded.push(name);
      if (i === 0) console.log(`module: ${String(stored.size_bytes)} bytes, key rank ${String(stored.key_rank)}, value rank ${String(stored.value_rank)}`);
    }
    console.log(`uploaded ${moduleNames.length} modules; base model "${baseModel}"`);
    const plan = (index: number): PlannedRequest => planRequest(index, baseModel, moduleNames, options.streamEvery);

    // Warm-up: one request per model, so ONNX Runtime's first runs and the first module loads stay out of the timed phases.
    const warmup = await runPhase('warm-up', url, options.modules + 1, 1, options.timeLimitSeconds, (index) => ({ ...plan(index), model: index < options.modules ? moduleNames[index] : baseModel }), options.maxTokens);
    const warmupFailures = warmup.results.filter((result) => !result.ok);
    for (const failure of warmupFailures) console.log(`warm-up error: model ${failure.request.model} status ${failure.status}: ${failure.errorBody?.slice(0, 500)}`);
    allOk &&= warmupFailures.length === 0 && warmup.notSent === 0;

    const beforeBaseline = await scrapeMetrics(url);
    const baseline = await runPhase('baseline, one request at a time', url, options.baselineRequests, 1, options.timeLimitSeconds, plan, options.maxTokens);
    const afterBaseline = await scrapeMetrics(url);
    const concurrent = await runPhase('concurrent', url, options.requests, options.concurrency, options.timeLimitSeconds, plan, options.maxTokens);
    const afterConcurrent = await scrapeMetrics(url);

    const baselineSummary = printPhase(baseline, 1);
    printMetrics('baseline phase', afterBaseline, beforeBaseline);
    const concurrentSummary = printPhase(concurrent, options.concurrency);
    printMetrics('concurrent phase', afterConcurrent, afterBaseline);
    printMetrics('whole run including warm-up', afterConcurrent, new Map());

    console.log(
      `\nconcurrency speed-up (${options.concurrency} clients vs 1): ${(concurrentSummary.requestsPerSecond / baselineSummary.requestsPerSecond).toFixed(2)}x requests/s, ` +
        `${(concurrentSummary.tokensPerSecond / baselineSummary.tokensPerSecond).toFixed(2)}x generated tokens/s`,
    );
    for (const phase of [baseline, concurrent]) allOk &&= phase.notSent === 0 && phase.results.every((result) => result.ok);
  } finally {
    if (server !== null) {
      const code = await stopServer(server);
      console.log(`server stopped with SIGTERM, exit code ${code}`);
      // The exit status of this script reports failed requests only, so an abnormal server exit is a warning.
      if (code !== 0) console.log(`WARNING: the server exited with code ${code} instead of 0; last server output:\n${server.recentLogs.join('\n')}`);
    } else {
      for (const name of uploaded) {
        await fetch(`${url}/v1/adapters/${name}`, { method: 'DELETE', signal: AbortSignal.timeout(30_000) }).catch((error: unknown) => {
          console.log(`failed to delete module ${name} from ${url}: ${(error as Error).message}`);
        });
      }
    }
  }
  return allOk;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'inducer-load-'));
  try {
    const ok = await run(options, workDir);
    if (!ok) {
      console.log('\nFAILED: at least one request failed or was not sent before the time limit');
      process.exitCode = 1;
    }
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  if (!(error instanceof LoadTestError)) throw error;
  process.stderr.write(`error: ${error.message}\n`);
  process.exitCode = 1;
}
