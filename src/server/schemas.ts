/**
 * Request schemas (zod, strict: unknown fields are rejected) and the conversion of a zod failure
 * into a 400 error that names the field.
 * @module
 */
import { z } from 'zod';
import { HttpError } from './errors.js';

/** Pattern of module and tenant names; it keeps names safe as single path segments. */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;

/** Description of {@link NAME_PATTERN} for error messages. */
export const NAME_RULE = '1 to 64 characters from a-z, A-Z, 0-9, ".", "_" and "-", starting with a letter or digit';

/** Maximum number of sequences (prompts times `n`) in one completion request. */
export const MAX_SEQUENCES_PER_REQUEST = 64;

/** Maximum number of stop strings a request may pass, as in the OpenAI API. */
export const MAX_STOP_STRINGS = 4;

/** Maximum `logprobs` value, as in the OpenAI completions API. */
export const MAX_LOGPROBS = 5;

/** Maximum characters of a client-sent value quoted in an error message. */
const MAX_QUOTED_CHARS = 64;

/** Quotes a client-sent string for an error message, cut to its first 64 characters and its length when longer. */
export function quoteForMessage(value: string): string {
  if (value.length <= MAX_QUOTED_CHARS) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, MAX_QUOTED_CHARS))}... (${value.length} characters)`;
}

/** Wraps a lone string in an array, so `prompt` and `stop` accept a string or an array of strings. */
function stringOrArray(value: unknown): unknown {
  return typeof value === 'string' ? [value] : value;
}

/** Returns whether `value` is a prompt of token ids, as the OpenAI API allows: an array of numbers or of number arrays. */
function isTokenIdPrompt(value: unknown): boolean {
  if (!Array.isArray(value) || value.length === 0) return false;
  return value.every((item) => typeof item === 'number' || (Array.isArray(item) && item.every((id) => typeof id === 'number')));
}

const TOKEN_ID_PROMPT_MESSAGE = 'prompts of token ids are not supported by this server; send the prompt as a string or an array of strings';

const prompt = z.preprocess(
  (value, context) => {
    if (!isTokenIdPrompt(value)) return stringOrArray(value);
    context.addIssue({ code: 'custom', message: TOKEN_ID_PROMPT_MESSAGE, input: value });
    return z.NEVER;
  },
  z
    .array(z.string(), { error: 'expected a string or an array of strings' })
    .min(1, 'expected at least one prompt')
    .max(MAX_SEQUENCES_PER_REQUEST, `expected at most ${MAX_SEQUENCES_PER_REQUEST} prompts`),
);

const stop = z.preprocess(
  stringOrArray,
  z
    .array(z.string().min(1, 'a stop string must not be empty'), { error: 'expected a string or an array of strings' })
    .max(MAX_STOP_STRINGS, `expected at most ${MAX_STOP_STRINGS} stop strings`),
);

/** Body of `POST /v1/completions`: the OpenAI completions request, minus the fields this server does not implement. */
export const completionRequestSchema = z.strictObject({
  model: z.string().min(1, 'expected the base model id or a module name from GET /v1/models'),
  prompt,
  max_tokens: z.number().int().min(0).default(16),
  temperature: z.number().min(0).max(2).default(1),
  top_p: z.number().gt(0).max(1).default(1),
  top_k: z.number().int().min(0).default(0),
  stop: stop.nullable().optional(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
  n: z.number().int().min(1).max(MAX_SEQUENCES_PER_REQUEST).default(1),
  logprobs: z.number().int().min(0).max(MAX_LOGPROBS).nullable().optional(),
  echo: z.boolean().default(false),
  stream: z.boolean().default(false),
  stream_options: z.strictObject({ include_usage: z.boolean().default(false) }).nullable().optional(),
  /** End-user id for abuse tracking in the OpenAI API; accepted and logged, not interpreted. */
  user: z.string().max(256).optional(),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** Query of `GET /v1/adapters`. */
export const listAdaptersQuerySchema = z.strictObject({
  all: z.enum(['true', 'false']).optional(),
});

function describePath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else text += text === '' ? String(key) : `.${String(key)}`;
  }
  return text;
}

/**
 * Converts a zod failure into a 400 {@link HttpError}. The message lists every issue with its
 * field path; `param` is the first issue's field. Unknown fields get the list of supported ones.
 */
export function validationError(error: z.ZodError, what: string, knownFields: readonly string[]): HttpError {
  const parts: string[] = [];
  const reported = new Set<string>();
  let param: string | null = null;
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const prefix = describePath(issue.path);
      const names = issue.keys.map((key) => (prefix === '' ? key : `${prefix}.${key}`));
      param ??= names[0];
      parts.push(
        `unknown field(s) ${names.map((name) => JSON.stringify(name)).join(', ')}; remove them` +
          (prefix === '' ? ` (supported fields: ${knownFields.join(', ')})` : ''),
      );
      continue;
    }
    const field = describePath(issue.path);
    // One message per field: a value such as 2^60 breaks several rules, and the first message is enough.
    if (reported.has(field)) continue;
    reported.add(field);
    param ??= field === '' ? null : field;
    // zod reports a missing field as "expected string, received undefined", so the message is replaced by one that calls it missing.
    const missing = issue.code === 'invalid_type' && 'input' in issue && issue.input === undefined;
    parts.push(`${field === '' ? '(body)' : field}: ${missing ? 'missing; the field is required' : issue.message}`);
  }
  return new HttpError(400, `invalid ${what}: ${parts.join('; ')}`, { param, code: 'invalid_request' });
}

/** Parses `raw` with `schema` or throws a 400 {@link HttpError} naming the invalid fields. */
export function parseRequest<T extends z.ZodObject>(schema: T, raw: unknown, what: string): z.infer<T> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new HttpError(400, `invalid ${what}: expected a JSON object`, { code: 'invalid_request' });
  }
  const result = schema.safeParse(raw, { reportInput: true });
  if (!result.success) throw validationError(result.error, what, Object.keys(schema.shape));
  return result.data;
}

/** Checks a module name from a URL or request body; throws a 400 {@link HttpError} naming the rule. */
export function checkName(name: string, param: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new HttpError(400, `invalid ${param} ${quoteForMessage(name)}: a name has ${NAME_RULE}`, {
      param,
      code: 'invalid_name',
    });
  }
  return name;
}
