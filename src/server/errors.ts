/**
 * HTTP errors in the OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`.
 * @module
 */

/** Category in the `type` field of an error body, as the OpenAI API names them. */
export type HttpErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable_error';

export interface HttpErrorOptions {
  /** Error category; derived from the status when omitted. */
  readonly type?: HttpErrorType;
  /** Request field the error is about, such as `max_tokens` or `prompt[1]`; null when none. */
  readonly param?: string | null;
  /** Machine-readable error code, such as `model_not_found`. */
  readonly code?: string | null;
  /** Extra response headers, such as `Retry-After`. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

/** JSON body of an error response. */
export interface ErrorBody {
  error: { message: string; type: HttpErrorType; param: string | null; code: string | null };
}

function defaultType(status: number): HttpErrorType {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'service_unavailable_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** An error the server answers with `status` and an OpenAI-shaped body; `message` says what failed and how to fix it. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  readonly status: number;
  readonly type: HttpErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, message: string, options: HttpErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = status;
    this.type = options.type ?? defaultType(status);
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}
