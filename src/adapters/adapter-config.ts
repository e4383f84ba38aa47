/**
 * Schema of `adapter_config.json`, the metadata file of a tuning module folder: the method and
 * its hyper-parameters, the fingerprint of the base model the module was trained for, optional
 * task metadata (prompt template, stop strings) and an optional training summary.
 * @module
 */
import { z } from 'zod';

/** Category of an {@link AdapterError}, which callers map to a status code. */
export type AdapterErrorReason =
  /** The module folder or one of its files does not exist. */
  | 'not_found'
  /** A file exists but its contents are invalid: bad JSON, schema, tensors, shapes or values. */
  | 'invalid'
  /** The module is valid but was trained for a different base model. */
  | 'incompatible'
  /** Reading or writing failed for a reason other than the contents. */
  | 'io';

/** Error for a module that cannot be read, validated or written; the message names the file and the problem. */
export class AdapterError extends Error {
  override readonly name = 'AdapterError';
  readonly reason: AdapterErrorReason;

  constructor(message: string, options?: { cause?: unknown; reason?: AdapterErrorReason }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = options?.reason ?? 'invalid';
  }
}

/** Version of the module format that this code reads and writes. */
export const ADAPTER_FORMAT_VERSION = 1;

/** Tuning methods that `adapter_config.json` can name. */
export const SUPPORTED_METHODS = ['inducer', 'prefix', 'lora'] as const;

const positiveInteger = z.number().int().positive();

const baseModelSchema = z.strictObject({
  architecture: z.enum(['gpt2', 'llama']),
  model_type: z.string().min(1),
  hidden_size: positiveInteger,
  num_layers: positiveInteger,
  num_heads: positiveInteger,
  num_key_value_heads: positiveInteger,
  head_dim: positiveInteger,
  vocab_size: positiveInteger,
  weights_sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hexadecimal digits'),
});

/** Placeholder in `task.prompt_template` that the user's prompt replaces. */
export const PROMPT_PLACEHOLDER = '{prompt}';

/** Maximum length of `task.prompt_template` in characters. */
export const MAX_PROMPT_TEMPLATE_CHARS = 8192;

/** Maximum length of `task.description` in characters. */
export const MAX_TASK_DESCRIPTION_CHARS = 4096;

/** Maximum number of strings in `task.stop`. */
export const MAX_TASK_STOP_STRINGS = 16;

/** Maximum length of each string in `task.stop`, in characters. */
export const MAX_TASK_STOP_CHARS = 256;

function countPlaceholders(template: string): number {
  return template.split(PROMPT_PLACEHOLDER).length - 1;
}

// The limits keep a module from making every request that uses it slow: each placeholder copies
// the whole prompt, and every stop string is matched against every generated token.
const taskSchema = z.strictObject({
  /** Free text for people browsing modules. */
  description: z.string().max(MAX_TASK_DESCRIPTION_CHARS, `expected at most ${MAX_TASK_DESCRIPTION_CHARS} characters`).optional(),
  /** Text around the user's prompt; exactly one `{prompt}` marks where the prompt goes. */
  prompt_template: z
    .string()
    .max(MAX_PROMPT_TEMPLATE_CHARS, `expected at most ${MAX_PROMPT_TEMPLATE_CHARS} characters`)
    .refine((template) => countPlaceholders(template) === 1, {
      error: (issue) =>
        `must contain the placeholder ${PROMPT_PLACEHOLDER} exactly once, found it ${countPlaceholders(String(issue.input))} times`,
    })
    .optional(),
  /** Strings that end generation for this task, in addition to the model's end-of-sequence tokens. */
  stop: z
    .array(z.string().min(1).max(MAX_TASK_STOP_CHARS, `expected at most ${MAX_TASK_STOP_CHARS} characters`))
    .max(MAX_TASK_STOP_STRINGS, `expected at most ${MAX_TASK_STOP_STRINGS} stop strings`)
    .optional(),
});

/**
 * Returns `template` with its `{prompt}` placeholder replaced by `prompt`. The prompt is inserted
 * literally: `$&` and the other replacement patterns of `String.prototype.replace` stay as typed.
 */
export function fillPromptTemplate(template: string, prompt: string): string {
  return template.replace(PROMPT_PLACEHOLDER, () => prompt);
}

const loraQSchema = z.strictObject({
  rank: positiveInteger,
  alpha: z.number().positive(),
  bias: z.boolean(),
});

const inducerConfigSchema = z.strictObject({
  format_version: z.literal(ADAPTER_FORMAT_VERSION, `expected ${ADAPTER_FORMAT_VERSION}, the only format version this program reads`),
  method: z.literal('inducer'),
  /** r_k: 0 or 1 means no key MLP, >= 2 adds it. */
  key_rank: z.number().int().nonnegative(),
  /** r_v, the width of the value MLP. */
  value_rank: positiveInteger,
  lora_q: loraQSchema.nullable(),
  base_model: baseModelSchema,
  task: taskSchema.optional(),
  /** Training summary written by the trainer (data set, steps, losses); not interpreted here. */
  training: z.record(z.string(), z.unknown()).optional(),
  created_at: z.iso.datetime({ offset: true }).optional(),
});

const prefixConfigSchema = z.strictObject({
  format_version: z.literal(ADAPTER_FORMAT_VERSION, `expected ${ADAPTER_FORMAT_VERSION}, the only format version this program reads`),
  method: z.literal('prefix'),
  /** P, the virtual tokens prepended to the keys and values of every layer. */
  prefix_length: positiveInteger,
  base_model: baseModelSchema,
  task: taskSchema.optional(),
  training: z.record(z.string(), z.unknown()).optional(),
  created_at: z.iso.datetime({ offset: true }).optional(),
});

const loraConfigSchema = z.strictObject({
  format_version: z.literal(ADAPTER_FORMAT_VERSION, `expected ${ADAPTER_FORMAT_VERSION}, the only format version this program reads`),
  method: z.literal('lora'),
  /** r, the rank of the query and the value update. */
  rank: positiveInteger,
  /** The updates are scaled by alpha / rank. */
  alpha: z.number().positive(),
  target_modules: z
    .array(z.string())
    .refine((targets) => targets.length === 2 && targets[0] === 'q' && targets[1] === 'v', 'expected ["q", "v"], the only LoRA targets this program supports'),
  base_model: baseModelSchema,
  task: taskSchema.optional(),
  training: z.record(z.string(), z.unknown()).optional(),
  created_at: z.iso.datetime({ offset: true }).optional(),
});

const adapterConfigSchema = z.discriminatedUnion('method', [inducerConfigSchema, prefixConfigSchema, loraConfigSchema]);

/** The inducer fields, absent from the other methods' configs; declared so that code can read them from any config. */
interface WithoutInducerFields {
  readonly key_rank?: undefined;
  readonly value_rank?: undefined;
  readonly lora_q?: undefined;
}

/** `adapter_config.json` of an inducer-tuning module. */
export type InducerAdapterConfig = z.infer<typeof inducerConfigSchema>;
/** `adapter_config.json` of a prefix-tuning module. */
export type PrefixAdapterConfig = z.infer<typeof prefixConfigSchema> & WithoutInducerFields;
/** `adapter_config.json` of a LoRA module. */
export type LoraAdapterConfig = z.infer<typeof loraConfigSchema> & WithoutInducerFields;

/** Contents of `adapter_config.json`, discriminated by `method`. */
export type AdapterConfig = InducerAdapterConfig | PrefixAdapterConfig | LoraAdapterConfig;

/** Task metadata stored with a module. */
export type AdapterTask = z.infer<typeof taskSchema>;

function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length === 0 ? '(top level)' : issue.path.map(String).join('.');
      return `${where}: ${issue.message}`;
    })
    .join('; ');
}

/**
 * Validates the parsed JSON of `adapter_config.json`. `source` names the file in messages.
 * Throws {@link AdapterError} (reason 'invalid') listing each invalid field with its path,
 * including unknown fields, which are rejected.
 */
export function parseAdapterConfig(raw: unknown, source: string): AdapterConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new AdapterError(`${source}: expected a JSON object, found ${Array.isArray(raw) ? 'an array' : JSON.stringify(raw)}`);
  }
  const method = (raw as { method?: unknown }).method;
  if (typeof method === 'string' && !(SUPPORTED_METHODS as readonly string[]).includes(method)) {
    throw new AdapterError(
      `${source}: method "${method}" is not supported; supported methods are ${SUPPORTED_METHODS.join(', ')}`,
    );
  }
  const parsed = adapterConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new AdapterError(`${source}: invalid adapter config: ${formatIssues(parsed.error)}`);
  }
  return parsed.data;
}
