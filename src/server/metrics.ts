/**
 * Prometheus metrics of the server and the backend, in one prom-client registry. Labels are
 * low-cardinality: the route template, the status code and the kind of step or model, never a
 * tenant, module name or request id.
 * @module
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BackendObserver } from '../runtime/backend.js';

/** Bucket bounds in seconds for request durations and first-token latency. */
const LATENCY_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Bucket bounds in seconds for the time between two tokens of one sequence. */
const TOKEN_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Metrics of one server; `observer` feeds the backend's reports into them. */
export interface ServerMetrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpRequestDuration: Histogram<'route' | 'method' | 'status'>;
  readonly timeToFirstToken: Histogram<'model_kind'>;
  readonly interTokenLatency: Histogram<'model_kind'>;
  readonly promptTokens: Counter<'model_kind'>;
  readonly generatedTokens: Counter<'model_kind'>;
  readonly batchSize: Histogram<'kind'>;
  readonly stepDuration: Histogram<'kind'>;
  readonly queueDepth: Gauge;
  readonly moduleCacheEvents: Counter<'event'>;
  readonly moduleLoadDuration: Histogram;
  readonly moduleLoadBytes: Counter;
  readonly modelLoadSeconds: Gauge;
  readonly modelParameters: Gauge;
  readonly observer: BackendObserver;
}

/** Creates the registry with the default process metrics and the server's own metrics, all prefixed `inducer_` except the process ones. */
export function createMetrics(): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const httpRequests = new Counter({
    name: 'inducer_http_requests_total',
    help: 'HTTP requests answered, by route template, method and status code',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const httpRequestDuration = new Histogram({
    name: 'inducer_http_request_duration_seconds',
    help: 'Time from receiving a request to the end of its response, by route template, method and status code',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const timeToFirstToken = new Histogram({
    name: 'inducer_time_to_first_token_seconds',
    help: 'Time from submitting a sequence to its first generated token',
    labelNames: ['model_kind'] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const interTokenLatency = new Histogram({
    name: 'inducer_inter_token_latency_seconds',
    help: 'Time between two consecutive generated tokens of one sequence',
    labelNames: ['model_kind'] as const,
    buckets: TOKEN_BUCKETS_SECONDS,
    registers: [registry],
  });
  const promptTokens = new Counter({
    name: 'inducer_prompt_tokens_total',
    help: 'Prompt tokens of finished sequences',
    labelNames: ['model_kind'] as const,
    registers: [registry],
  });
  const generatedTokens = new Counter({
    name: 'inducer_generated_tokens_total',
    help: 'Tokens generated for finished sequences',
    labelNames: ['model_kind'] as const,
    registers: [registry],
  });
  const batchSize = new Histogram({
    name: 'inducer_batch_size',
    help: 'Rows in one engine step, by step kind (prefill or decode)',
    labelNames: ['kind'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [registry],
  });
  const stepDuration = new Histogram({
    name: 'inducer_step_duration_seconds',
    help: 'Wall time of one engine step, by step kind (prefill or decode)',
    labelNames: ['kind'] as const,
    buckets: TOKEN_BUCKETS_SECONDS,
    registers: [registry],
  });
  const queueDepth = new Gauge({
    name: 'inducer_queue_depth',
    help: 'Sequences waiting for admission to a batch',
    registers: [registry],
  });
  const moduleCacheEvents = new Counter({
    name: 'inducer_module_cache_events_total',
    help: 'Module cache lookups and evictions, by event (hit, miss, eviction)',
    labelNames: ['event'] as const,
    registers: [registry],
  });
  const moduleLoadDuration = new Histogram({
    name: 'inducer_module_load_duration_seconds',
    help: 'Time to load a module into the cache after a miss',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
    registers: [registry],
  });
  const moduleLoadBytes = new Counter({
    name: 'inducer_module_load_bytes_total',
    help: 'Bytes of module parameters loaded into the cache',
    registers: [registry],
  });
  const modelLoadSeconds = new Gauge({
    name: 'inducer_model_load_seconds',
    help: 'Time the base model took to load',
    registers: [registry],
  });
  const modelParameters = new Gauge({
    name: 'inducer_model_parameters',
    help: 'Number of parameters of the base model',
    registers: [registry],
  });

  // Every label value is pre-set so the series exist at 0 before the first event.
  for (const event of ['hit', 'miss', 'eviction']) moduleCacheEvents.inc({ event }, 0);
  for (const kind of ['base', 'adapter']) {
    promptTokens.inc({ model_kind: kind }, 0);
    generatedTokens.inc({ model_kind: kind }, 0);
  }

  const observer: BackendObserver = {
    onStep(kind, numRows, seconds) {
      batchSize.observe({ kind }, numRows);
      stepDuration.observe({ kind }, seconds);
    },
    onQueueDepth(numWaiting) {
      queueDepth.set(numWaiting);
    },
    onModuleCache(event) {
      moduleCacheEvents.inc({ event: event.kind });
      if (event.kind === 'miss') {
        moduleLoadDuration.observe(event.seconds);
        moduleLoadBytes.inc(event.sizeBytes);
      }
    },
    onModelLoaded(seconds, numParameters) {
      modelLoadSeconds.set(seconds);
      modelParameters.set(numParameters);
    },
  };

  return {
    registry,
    httpRequests,
    httpRequestDuration,
    timeToFirstToken,
    interTokenLatency,
    promptTokens,
    generatedTokens,
    batchSize,
    stepDuration,
    queueDepth,
    moduleCacheEvents,
    moduleLoadDuration,
    moduleLoadBytes,
    modelLoadSeconds,
    modelParameters,
    observer,
  };
}
