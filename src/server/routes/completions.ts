/**
 * `POST /v1/completions`: OpenAI-compatible text completion, as one JSON response or as
 * server-sent events. Each prompt times `n` becomes one backend job; tokens are turned into text
 * here on the main thread, where stop strings are matched and a hit cancels the job.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { Express, Request, Response } from 'express';
import { fillPromptTemplate, PROMPT_PLACEHOLDER, type AdapterTask } from '../../adapters/adapter-config.js';
import type { AdapterLease } from '../../adapters/store.js';
import { TokenizerError } from '../../model/tokenizer.js';
import type { CompletionJob, JobEvent, JobModule, TokenEvent } from '../../runtime/backend.js';
import { IncrementalDetokenizer } from '../../runtime/detokenizer.js';
import { StopStringMatcher } from '../../runtime/stop-strings.js';
import { contextOf, principalOf, type AppDeps, type ServedModel } from '../context.js';
import { HttpError } from '../errors.js';
import {
  completionRequestSchema,
  MAX_SEQUENCES_PER_REQUEST,
  NAME_PATTERN,
  parseRequest,
  quoteForMessage,
  type CompletionRequest,
} from '../schemas.js';
import { SseStream } from '../sse.js';

type ModelKind = 'base' | 'adapter';

/**
 * Characters per token assumed when rejecting a prompt before tokenizing it: a prompt longer than
 * the model's context times this many characters cannot fit, so it is rejected without spending
 * main-thread time on the tokenizer.
 */
// NOTE: this assumes no vocabulary entry decodes to more than 64 characters and that the
// tokenizer's normalizer does not shrink the text much; both hold for GPT-2 and Llama tokenizers.
export const MAX_CHARS_PER_TOKEN = 64;

/** The model a request resolved to: the base model, or a leased module version with its task settings. */
interface ResolvedModel {
  readonly kind: ModelKind;
  readonly module: JobModule;
  readonly task: AdapterTask | undefined;
  readonly lease: AdapterLease | null;
}

/** OpenAI legacy completions log-probability block. */
interface LogprobsBlock {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[] | null;
  text_offset: number[];
}

/** State of one choice (one prompt, one of its `n` samples) while its job runs. */
interface ChoiceState {
  readonly index: number;
  readonly job: CompletionJob;
  /** Prompt after the module's template, which `echo` returns. */
  readonly promptText: string;
  readonly detokenizer: IncrementalDetokenizer;
  readonly matcher: StopStringMatcher;
  /** Text sent or to be sent, without the echoed prompt. */
  text: string;
  logprobs: LogprobsBlock | null;
  /** Set when a stop string was found; later tokens of the job are ignored. */
  stopStringHit: boolean;
  /** Set when this route cancelled the job (stop string, client gone, another job failed). */
  cancelRequested: boolean;
  /** Position in the choice's full text (echoed prompt included) where the next token's logprobs entry starts. */
  logprobsOffset: number;
  finishReason: 'stop' | 'length' | null;
  finished: boolean;
  promptTokens: number;
  completionTokens: number;
  readonly submittedAtMs: number;
  lastTokenAtMs: number | null;
  /** Last prompt or generated token id, the context of the next token's text in logprobs. */
  previousTokenId: number | null;
}

/**
 * Returns the text a token adds after `previousId` (null for the first token). Decoding the
 * token alone would drop the leading space that SentencePiece-style decoders strip from the
 * first piece.
 */
function tokenText(model: ServedModel, tokenId: number, previousId: number | null): string {
  const options = { skipSpecialTokens: false };
  if (previousId === null) return model.tokenizer.decode([tokenId], options);
  const context = model.tokenizer.decode([previousId], options);
  return model.tokenizer.decode([previousId, tokenId], options).slice(context.length);
}

async function resolveModel(deps: AppDeps, tenant: string, name: string): Promise<ResolvedModel> {
  if (name === deps.model.id) return { kind: 'base', module: { kind: 'base' }, task: undefined, lease: null };
  const notFound = new HttpError(
    404,
    `model ${quoteForMessage(name)} not found: use the base model id ${JSON.stringify(deps.model.id)} or the name of one of your modules (GET /v1/models lists them)`,
    { param: 'model', code: 'model_not_found' },
  );
  if (!NAME_PATTERN.test(name)) throw notFound;
  const lease = await deps.store.acquire(tenant, name);
  if (lease === null) throw notFound;
  return {
    kind: 'adapter',
    module: { kind: 'adapter', key: lease.adapter.key, dir: lease.adapter.dir },
    task: lease.adapter.config.task,
    lease,
  };
}

function encodePrompt(deps: AppDeps, text: string, param: string): number[] {
  let ids: number[];
  try {
    ids = deps.model.tokenizer.encode(text);
  } catch (cause) {
    if (!(cause instanceof TokenizerError)) throw cause;
    throw new HttpError(400, `${param} cannot be tokenized: ${cause.message}`, { param, code: 'invalid_prompt', cause });
  }
  if (ids.length > 0) return ids;
  const start = deps.model.tokenizer.bosTokenId ?? deps.model.config.bosTokenId ?? deps.model.tokenizer.eosTokenIds[0];
  if (start === undefined || start === null) {
    throw new HttpError(400, `${param} is empty and the model has no BOS or EOS token to start from; send a non-empty prompt`, {
      param,
      code: 'invalid_prompt',
    });
  }
  return [start];
}

function emptyLogprobs(): LogprobsBlock {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}

/**
 * Builds the log-probability entries of one generated token; `previousId` is the token before it
 * and `offset` its position in the choice's full text.
 */
function tokenLogprobs(model: ServedModel, event: TokenEvent, previousId: number | null, offset: number): LogprobsBlock {
  const top: Record<string, number> = {};
  for (const alternative of event.topLogprobs ?? []) top[tokenText(model, alternative.tokenId, previousId)] = alternative.logprob;
  return {
    tokens: [tokenText(model, event.tokenId, previousId)],
    token_logprobs: [event.logprob],
    top_logprobs: [top],
    text_offset: [offset],
  };
}

function appendLogprobs(target: LogprobsBlock, part: LogprobsBlock): void {
  target.tokens.push(...part.tokens);
  target.token_logprobs.push(...part.token_logprobs);
  target.top_logprobs?.push(...(part.top_logprobs ?? []));
  target.text_offset.push(...part.text_offset);
}

/** Returns whether a prompt starts with a BOS or EOS token that the tokenizer or {@link encodePrompt} added, which has no text. */
function startsWithSpecialToken(model: ServedModel, promptIds: readonly number[]): boolean {
  const first = promptIds[0];
  return first !== undefined && (first === model.tokenizer.bosTokenId || model.tokenizer.eosTokenIds.includes(first));
}

/**
 * Builds the log-probability entries of the echoed prompt, whose text starts at offset 0. A
 * leading BOS token is left out because the echoed text does not contain it; each other token's
 * log-probability is conditioned on the tokens before it, so a prompt without BOS has null first.
 * `logprobs[i]` belongs to `promptIds[i + 1]`.
 */
function promptLogprobs(model: ServedModel, promptIds: readonly number[], logprobs: readonly number[]): LogprobsBlock {
  const block = emptyLogprobs();
  const start = startsWithSpecialToken(model, promptIds) ? 1 : 0;
  let offset = 0;
  for (let i = start; i < promptIds.length; i++) {
    const token = tokenText(model, promptIds[i], i === start ? null : promptIds[i - 1]);
    block.tokens.push(token);
    block.token_logprobs.push(i === 0 ? null : (logprobs[i - 1] ?? null));
    block.top_logprobs?.push(null);
    block.text_offset.push(offset);
    offset += token.length;
  }
  return block;
}

/**
 * Returns the prompt given to the model: the request's prompt, inside the module's template when the
 * module has one. Throws a 400 when the result cannot fit the context even at
 * {@link MAX_CHARS_PER_TOKEN} characters per token, before any tokenizing.
 */
function promptTextOf(model: ServedModel, prompt: string, template: string | undefined, param: string): string {
  const maxPositions = model.config.maxPositions;
  const maxChars = maxPositions * MAX_CHARS_PER_TOKEN;
  // Checking the prompt alone first avoids copying a huge prompt into the template.
  const templateChars = template === undefined ? 0 : template.length - PROMPT_PLACEHOLDER.length;
  const numChars = prompt.length + templateChars;
  if (numChars > maxChars) {
    throw new HttpError(
      400,
      `${param} has ${numChars} characters${template === undefined ? '' : " with the module's prompt template"}, more than the ${maxChars} that can fit the model's context of ${maxPositions} tokens; shorten the prompt`,
      { param, code: 'context_length_exceeded' },
    );
  }
  return template === undefined ? prompt : fillPromptTemplate(template, prompt);
}

/** Returns `(seed + sample) mod 2^53`, the seed of the `sample`-th of n samples, without rounding past 2^53 - 1. */
function sampleSeed(seed: number, sample: number): number {
  return seed <= Number.MAX_SAFE_INTEGER - sample ? seed + sample : sample - (Number.MAX_SAFE_INTEGER - seed) - 1;
}

export function registerCompletionRoutes(app: Express, deps: AppDeps): void {
  app.post('/v1/completions', async (req: Request, res: Response) => {
    if (deps.lifecycle?.draining) {
      throw new HttpError(503, 'the server is shutting down and accepts no new completions; retry on another replica', {
        code: 'shutting_down',
      });
    }
    if (!req.is('application/json')) {
      throw new HttpError(415, `expected Content-Type application/json, got ${JSON.stringify(req.headers['content-type'] ?? '(none)')}`, {
        code: 'unsupported_media_type',
      });
    }
    const request = parseRequest(completionRequestSchema, req.body, 'completion request');
    const prompts = request.prompt;
    if (prompts.length * request.n > MAX_SEQUENCES_PER_REQUEST) {
      throw new HttpError(
        400,
        `${prompts.length} prompts times n=${request.n} make ${prompts.length * request.n} sequences, more than the limit of ${MAX_SEQUENCES_PER_REQUEST}; split the request`,
        { param: 'n', code: 'invalid_request' },
      );
    }

    const resolved = await resolveModel(deps, principalOf(res).tenant, request.model);
    try {
      await runCompletion(deps, req, res, request, prompts, resolved);
    } finally {
      resolved.lease?.release();
    }
  });
}

async function runCompletion(
  deps: AppDeps,
  req: Request,
  res: Response,
  request: CompletionRequest,
  prompts: readonly string[],
  resolved: ResolvedModel,
): Promise<void> {
  const { requestId, log } = contextOf(res);
  const principal = principalOf(res);
  const model = deps.model;
  const completionId = `cmpl-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const stops = [...(request.stop ?? []), ...(resolved.task?.stop ?? [])];
  const singlePrompt = typeof (req.body as { prompt?: unknown }).prompt === 'string';
  const template = resolved.task?.prompt_template;
  const wantLogprobs = request.logprobs != null;

  // Check the length of every prompt, then tokenize and check each before submitting anything.
  const promptTexts = prompts.map((prompt, i) => promptTextOf(model, prompt, template, singlePrompt ? 'prompt' : `prompt[${i}]`));
  const encoded: { promptText: string; promptIds: number[] }[] = [];
  for (const [i, promptText] of promptTexts.entries()) {
    // Tokenizing runs on the main thread; yielding between prompts lets other requests run.
    if (i > 0) await new Promise((resolve) => setImmediate(resolve));
    if (res.destroyed) return;
    const param = singlePrompt ? 'prompt' : `prompt[${i}]`;
    const promptIds = encodePrompt(deps, promptText, param);
    const maxPositions = model.config.maxPositions;
    if (promptIds.length + request.max_tokens > maxPositions) {
      throw new HttpError(
        400,
        `${param} has ${promptIds.length} tokens and max_tokens is ${request.max_tokens}, together more than the model's context of ${maxPositions} tokens; shorten the prompt or lower max_tokens`,
        { param: request.max_tokens > 0 && promptIds.length < maxPositions ? 'max_tokens' : param, code: 'context_length_exceeded' },
      );
    }
    encoded.push({ promptText, promptIds });
  }

  const choices: ChoiceState[] = [];
  encoded.forEach(({ promptText, promptIds }, promptIndex) => {
    for (let sample = 0; sample < request.n; sample++) {
      const index = promptIndex * request.n + sample;
      const job: CompletionJob = {
        id: `${completionId}-${index}`,
        tenant: principal.tenant,
        module: resolved.module,
        promptIds,
        // Each of the n samples gets its own seed, so a seeded request with n > 1 returns n different samples.
        sampling: {
          temperature: request.temperature,
          topK: request.top_k,
          topP: request.top_p,
          seed: request.seed == null ? null : sampleSeed(request.seed, sample),
        },
        maxNewTokens: request.max_tokens,
        stopTokenIds: model.tokenizer.eosTokenIds,
        topLogprobs: request.logprobs ?? 0,
        promptLogprobs: request.echo && wantLogprobs,
      };
      choices.push({
        index,
        job,
        promptText,
        detokenizer: new IncrementalDetokenizer((ids) => model.tokenizer.decode(ids), promptIds),
        matcher: new StopStringMatcher(stops),
        text: '',
        logprobs: wantLogprobs ? emptyLogprobs() : null,
        stopStringHit: false,
        cancelRequested: false,
        // The echoed prompt's entries start at 0; generated tokens follow the echoed text.
        logprobsOffset: request.echo ? promptText.length : 0,
        finishReason: null,
        finished: false,
        promptTokens: promptIds.length,
        completionTokens: 0,
        submittedAtMs: performance.now(),
        lastTokenAtMs: null,
        previousTokenId: promptIds.at(-1) ?? null,
      });
    }
  });

  let stream: SseStream | null = null;
  let failure: HttpError | null = null;
  let numFinished = 0;
  let settle: () => void = () => undefined;
  const allFinished = new Promise<void>((resolve) => {
    settle = resolve;
  });

  const cancelChoice = (choice: ChoiceState): void => {
    choice.cancelRequested = true;
    deps.backend.cancel(choice.job.id);
  };

  const cancelUnfinished = (): void => {
    for (const choice of choices) if (!choice.finished) cancelChoice(choice);
  };

  const sendChunk = (choice: ChoiceState, text: string, logprobs: LogprobsBlock | null, finishReason: string | null): void => {
    stream?.send({
      id: completionId,
      object: 'text_completion',
      created,
      model: request.model,
      choices: [{ text, index: choice.index, logprobs, finish_reason: finishReason }],
    });
  };

  const emitText = (choice: ChoiceState, text: string, logprobs: LogprobsBlock | null): void => {
    choice.text += text;
    if (text !== '' || logprobs !== null) sendChunk(choice, text, logprobs, null);
  };

  const finishChoice = (choice: ChoiceState): void => {
    if (choice.finished) return;
    choice.finished = true;
    numFinished++;
    if (numFinished === choices.length) settle();
  };

  const onToken = (choice: ChoiceState, event: TokenEvent): void => {
    if (choice.stopStringHit || failure !== null) return;
    const nowMs = performance.now();
    const kind = { model_kind: resolved.kind };
    if (choice.lastTokenAtMs === null) deps.metrics.timeToFirstToken.observe(kind, (nowMs - choice.submittedAtMs) / 1000);
    else deps.metrics.interTokenLatency.observe(kind, (nowMs - choice.lastTokenAtMs) / 1000);
    choice.lastTokenAtMs = nowMs;

    // The offset counts the token texts before this one, not `choice.text`, which lags behind
    // while the stop-string matcher holds back a possible match.
    const tokenBlock = choice.logprobs === null ? null : tokenLogprobs(model, event, choice.previousTokenId, choice.logprobsOffset);
    if (tokenBlock !== null) choice.logprobsOffset += tokenBlock.tokens[0].length;
    choice.previousTokenId = event.tokenId;
    if (tokenBlock !== null && choice.logprobs !== null) appendLogprobs(choice.logprobs, tokenBlock);
    const result = choice.matcher.push(choice.detokenizer.push(event.tokenId));
    emitText(choice, result.emit, tokenBlock);
    if (result.stopped) {
      choice.stopStringHit = true;
      choice.finishReason = 'stop';
      cancelChoice(choice);
    }
  };

  const onDone = (choice: ChoiceState, event: Extract<JobEvent, { type: 'done' }>): void => {
    choice.promptTokens = event.promptTokens;
    choice.completionTokens = event.completionTokens;
    deps.metrics.promptTokens.inc({ model_kind: resolved.kind }, event.promptTokens);
    deps.metrics.generatedTokens.inc({ model_kind: resolved.kind }, event.completionTokens);
    if (event.finishReason === 'cancelled' && !choice.cancelRequested && !choice.stopStringHit && failure === null) {
      // Only a shutdown cancels a job that this route did not cancel: reporting the truncated
      // text as finished would hide that it was cut off.
      failure = new HttpError(503, 'the server is shutting down and cancelled the completion before it finished; retry the request on another replica', {
        code: 'shutting_down',
      });
      log.warn({ jobId: event.jobId, completionTokens: event.completionTokens }, 'completion job cancelled by the shutdown');
      cancelUnfinished();
    }
    if (!choice.stopStringHit && failure === null) {
      const rest = choice.matcher.push(choice.detokenizer.flush());
      const tail = rest.emit + (rest.stopped ? '' : choice.matcher.flush());
      if (tail !== '') emitText(choice, tail, null);
      choice.finishReason = rest.stopped || event.finishReason === 'eos' ? 'stop' : 'length';
    }
    if (failure === null && choice.finishReason !== null) sendChunk(choice, '', null, choice.finishReason);
    finishChoice(choice);
  };

  const onEvent = (choice: ChoiceState, event: JobEvent): void => {
    if (choice.finished) return;
    switch (event.type) {
      case 'token':
        onToken(choice, event);
        return;
      case 'prompt_logprobs':
        if (choice.logprobs !== null) {
          const echoed = promptLogprobs(model, choice.job.promptIds, event.logprobs);
          appendLogprobs(echoed, choice.logprobs);
          choice.logprobs = echoed;
          if (stream !== null) sendChunk(choice, '', promptLogprobs(model, choice.job.promptIds, event.logprobs), null);
        }
        return;
      case 'done':
        onDone(choice, event);
        return;
      case 'error':
        failure ??= new HttpError(event.status, event.message, {
          code: event.code,
          ...(event.retryAfterSeconds === undefined ? {} : { headers: { 'Retry-After': String(Math.ceil(event.retryAfterSeconds)) } }),
        });
        // A 4xx is the client's mistake, not a server fault, so it is logged as a warning.
        log[event.status >= 500 ? 'error' : 'warn']({ jobId: event.jobId, status: event.status, code: event.code, err: event.message }, 'completion job failed');
        finishChoice(choice);
        cancelUnfinished();
        return;
    }
  };

  // A client that leaves before the response is complete cancels every job still running.
  res.on('close', () => {
    if (!res.writableFinished && numFinished < choices.length) {
      log.info({ requestId, numUnfinished: choices.length - numFinished }, 'client disconnected; cancelling its jobs');
      cancelUnfinished();
    }
  });

  for (const [i, choice] of choices.entries()) {
    try {
      deps.backend.submit(choice.job, (event) => onEvent(choice, event));
    } catch (cause) {
      // The error handler turns a QueueFullError into 429 and Retry-After.
      for (const submitted of choices.slice(0, i)) cancelChoice(submitted);
      throw cause;
    }
  }
  log.debug({ completionId, model: request.model, numSequences: choices.length, stream: request.stream }, 'completion submitted');

  if (request.stream) {
    stream = new SseStream(res);
    if (request.echo) for (const choice of choices) sendChunk(choice, choice.promptText, null, null);
    await allFinished;
    if (failure !== null) {
      const error: HttpError = failure;
      stream.send(error.toBody());
    } else if (request.stream_options?.include_usage) {
      stream.send({ id: completionId, object: 'text_completion', created, model: request.model, choices: [], usage: usageOf(choices) });
    }
    stream.end();
    return;
  }

  await allFinished;
  if (failure !== null) throw failure;
  if (res.destroyed) return;
  res.json({
    id: completionId,
    object: 'text_completion',
    created,
    model: request.model,
    choices: choices.map((choice) => ({
      text: request.echo ? choice.promptText + choice.text : choice.text,
      index: choice.index,
      logprobs: choice.logprobs,
      finish_reason: choice.finishReason,
    })),
    usage: usageOf(choices),
  });
}

function usageOf(choices: readonly ChoiceState[]): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  // Prompt tokens count once per prompt, as in the OpenAI API, though each of the n samples prefills it.
  const seenPrompts = new Set<readonly number[]>();
  let promptTokens = 0;
  let completionTokens = 0;
  for (const choice of choices) {
    if (!seenPrompts.has(choice.job.promptIds)) {
      seenPrompts.add(choice.job.promptIds);
      promptTokens += choice.promptTokens;
    }
    completionTokens += choice.completionTokens;
  }
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}
