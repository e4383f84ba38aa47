/**
 * The Express app of inducer-serve. `createApp` wires middleware and routes around the given
 * backend, store and model and does not listen, so tests and the serve command mount it as they need.
 * @module
 */
import { randomUUID } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { AdapterError } from '../adapters/module.js';
import { QueueFullError } from '../runtime/backend.js';
import { authenticate } from './auth.js';
import { contextOf, type AppDeps, type BodyLimits, type RequestContext } from './context.js';
import { HttpError } from './errors.js';
import { registerAdapterRoutes } from './routes/adapters.js';
import { registerCompletionRoutes } from './routes/completions.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerModelRoutes } from './routes/models.js';

export type { AppDeps, ServedModel, ServerLifecycle, BodyLimits } from './context.js';

/** Default size limit of JSON bodies: 1 MiB. */
export const DEFAULT_MAX_JSON_BYTES = 1024 * 1024;
/** Default size limit of a module upload's multipart body: 512 MiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024;

/** Client-sent request ids are kept when they look like ids; anything else is replaced. */
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Error that body-parser attaches to its failures. */
interface BodyParserError extends Error {
  type: string;
  status?: number;
  limit?: number;
  /** The body text, on parse failures. */
  body?: string;
}

function isBodyParserError(error: unknown): error is BodyParserError {
  return error instanceof Error && typeof (error as Partial<BodyParserError>).type === 'string' && 'status' in error;
}

/**
 * Describes the JSON value of a body that body-parser rejected in strict mode, such as `null` or
 * `"text"`, or returns null when the body is not valid JSON at all.
 */
function describeNonObjectJson(body: string | undefined): string | null {
  if (body === undefined) return null;
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return null;
  }
  return value === null ? 'null' : typeof value;
}

/** Converts any error a route throws into the HttpError sent as the response. */
function toHttpError(error: unknown, limits: BodyLimits): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof QueueFullError) {
    const seconds = Math.max(1, Math.ceil(error.retryAfterSeconds));
    return new HttpError(429, `the server is busy: ${error.message}`, { code: 'queue_full', headers: { 'Retry-After': String(seconds) }, cause: error });
  }
  if (error instanceof URIError) {
    // The router throws a URIError when a path segment such as `%ff` does not decode to UTF-8;
    // the only route parameter is a module name.
    return new HttpError(400, 'invalid percent-encoding in the URL path: a module name must be valid UTF-8 percent-encoded (encodeURIComponent)', {
      param: 'name',
      code: 'invalid_name',
      cause: error,
    });
  }
  if (error instanceof AdapterError) {
    const status = error.reason === 'not_found' ? 404 : error.reason === 'io' ? 500 : 400;
    return new HttpError(status, error.message, { code: `module_${error.reason}`, cause: error });
  }
  if (isBodyParserError(error)) {
    switch (error.type) {
      case 'entity.parse.failed': {
        const found = describeNonObjectJson(error.body);
        if (found !== null) {
          return new HttpError(400, `invalid request body: expected a JSON object, got ${found}`, { code: 'invalid_request', cause: error });
        }
        return new HttpError(400, `invalid JSON in the request body: ${error.message}; send one JSON object`, { code: 'invalid_json', cause: error });
      }
      case 'entity.too.large':
        return new HttpError(
          413,
          `request body is larger than the limit of ${error.limit ?? limits.maxJsonBytes} bytes; send a smaller body or raise the server's --max-json-bytes`,
          { code: 'payload_too_large', cause: error },
        );
      case 'encoding.unsupported':
      case 'charset.unsupported':
        return new HttpError(415, `${error.message}; send UTF-8 JSON`, { code: 'unsupported_media_type', cause: error });
      default:
        return new HttpError(error.status ?? 400, `invalid request body: ${error.message}`, { cause: error });
    }
  }
  return new HttpError(500, 'internal server error; the server logged the details with this request id', { code: 'internal_error', cause: error });
}

/**
 * Builds the app. Routes: `POST /v1/completions`, `GET /v1/models`, `PUT|GET|DELETE
 * /v1/adapters/{name}`, `GET /v1/adapters`, `GET /metrics`, `GET /healthz`, `GET /readyz`.
 * Every response carries `X-Request-Id`; every error is sent in the OpenAI error shape and logged.
 */
export function createApp(deps: AppDeps): Express {
  const limits: BodyLimits = {
    maxJsonBytes: deps.limits?.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES,
    maxUploadBytes: deps.limits?.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
  };
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Request id, logger and metrics for every request, including unmatched ones.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const offered = req.get('x-request-id');
    const requestId = offered !== undefined && REQUEST_ID_PATTERN.test(offered) ? offered : randomUUID();
    const context: RequestContext = { requestId, log: deps.logger.child({ requestId }) };
    Object.assign(res.locals, context);
    res.setHeader('X-Request-Id', requestId);
    // While the server drains, every response closes its connection, so clients with keep-alive
    // connections reconnect, reaching another replica once this one stops listening.
    if (deps.lifecycle?.draining) res.setHeader('Connection', 'close');
    const startedMs = performance.now();
    res.on('finish', () => {
      const route = req.route === undefined ? 'unmatched' : `${req.baseUrl}${String((req.route as { path: unknown }).path)}`;
      const labels = { route, method: req.method, status: String(res.statusCode) };
      const seconds = (performance.now() - startedMs) / 1000;
      deps.metrics.httpRequests.inc(labels);
      deps.metrics.httpRequestDuration.observe(labels, seconds);
      context.log.debug({ method: req.method, route, status: res.statusCode, seconds }, 'request finished');
    });
    next();
  });

  registerHealthRoutes(app, deps);

  app.use('/v1', (req: Request, res: Response, next: NextFunction) => {
    contextOf(res).principal = authenticate(req.get('authorization'), deps.apiKeys);
    next();
  });
  app.use('/v1', express.json({ limit: limits.maxJsonBytes, strict: true }));

  registerCompletionRoutes(app, deps);
  registerModelRoutes(app, deps);
  registerAdapterRoutes(app, deps, limits.maxUploadBytes);

  app.use((req: Request) => {
    throw new HttpError(404, `no route ${req.method} ${req.path}; see the API documentation for the endpoints`, { code: 'route_not_found' });
  });

  // Express recognises an error handler by its four parameters, so `next` stays although it is unused.
  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    void next;
    const httpError = toHttpError(error, limits);
    const log = (res.locals as Partial<RequestContext>).log ?? deps.logger;
    const fields = { method: req.method, path: req.path, status: httpError.status, code: httpError.code, param: httpError.param };
    if (httpError.status >= 500) log.error({ ...fields, err: httpError.cause ?? httpError }, httpError.message);
    else log.warn(fields, httpError.message);

    if (res.headersSent) {
      // A streamed response already has its status; end it so the client sees the stream stop.
      res.end();
      return;
    }
    for (const [name, value] of Object.entries(httpError.headers)) res.setHeader(name, value);
    res.status(httpError.status).json(httpError.toBody());
  });

  return app;
}
