/**
 * `POST /v1/completions`: OpenAI-compatible text completion, as one JSON response or as
 * server-sent events. Each prompt times `n` becomes one backend job; tokens are turned into text
 * here on the main thread, where stop strings are matched and a hit cancels the job.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { Express, Request, Response } from 'express';
import type { AdapterTask } from '../../adapters/adapter-config.js';
import type { AdapterLease } from '../../adapters/store.js';
import { TokenizerError } from '../../model/tokenizer.js';
import { QueueFullError, type CompletionJob, type JobEvent, type JobModule, type TokenEvent } from '../../runtime/backend.js';
import { IncrementalDetokenizer } from '../../runtime/detokenizer.js';
import { StopStringMatcher } from '../../runtime/stop-strings.js';
import { contextOf, principalOf, type AppDeps, type ServedModel } from '../context.js';
import { HttpError } from '../errors.js';
import { completionRequestSchema, MAX_SEQUENCES_PER_REQUEST, NAME_PATTERN, parseRequest, type CompletionRequest } from '../schemas.js';
import { SseStream } from '../sse.js';

type ModelKind = 'base' | 'adapter';

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
    `model ${JSON.stringify(name)} not found: use the base model id ${JSON.stringify(deps.model.id)} or the name of one of your modules (GET /v1/models lists them)`,
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
 * and `offset` its position in the choice's text.
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

/** Builds the log-probability entries of the echoed prompt: the first token has none, each later one is conditioned on the tokens before it. */
function promptLogprobs(model: ServedModel, promptIds: readonly number[], logprobs: readonly number[]): LogprobsBlock {
  const block = emptyLogprobs();
  let offset = 0;
  promptIds.forEach((tokenId, i) => {
    const token = tokenText(model, tokenId, i === 0 ? null : promptIds[i - 1]);
    block.tokens.push(token);
    block.token_logprobs.push(i === 0 ? null : (logprobs[i - 1] ?? null));
    block.top_logprobs?.push(null);
    block.text_offset.push(offset);
    offset += token.length;
  });
  return block;
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

  // Tokenize and check every prompt before submitting anything.
  const encoded = prompts.map((prompt, i) => {
    const param = singlePrompt ? 'prompt' : `prompt[${i}]`;
    const promptText = template === undefined ? prompt : template.replaceAll('{prompt}', prompt);
    const promptIds = encodePrompt(deps, promptText, param);
    const maxPositions = model.config.maxPositions;
    if (promptIds.length + request.max_tokens > maxPositions) {
      throw new HttpError(
        400,
        `${param} has ${promptIds.length} tokens and max_tokens is ${request.max_tokens}, together more than the model's context of ${maxPositions} tokens; shorten the prompt or lower max_tokens`,
        { param: request.max_tokens > 0 && promptIds.length < maxPositions ? 'max_tokens' : param, code: 'context_length_exceeded' },
      );
    }
    return { promptText, promptIds };
  });

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
        sampling: { temperature: request.temperature, topK: request.top_k, topP: request.top_p, seed: request.seed == null ? null : request.seed + sample },
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

  const cancelUnfinished = (): void => {
    for (const choice of choices) if (!choice.finished) deps.backend.cancel(choice.job.id);
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

    const echoLength = request.echo ? choice.promptText.length : 0;
    const tokenBlock =
      choice.logprobs === null ? null : tokenLogprobs(model, event, choice.previousTokenId, echoLength + choice.text.length);
    choice.previousTokenId = event.tokenId;
    if (tokenBlock !== null && choice.logprobs !== null) appendLogprobs(choice.logprobs, tokenBlock);
    const result = choice.matcher.push(choice.detokenizer.push(event.tokenId));
    emitText(choice, result.emit, tokenBlock);
    if (result.stopped) {
      choice.stopStringHit = true;
      choice.finishReason = 'stop';
      deps.backend.cancel(choice.job.id);
    }
  };

  const onDone = (choice: ChoiceState, event: Extract<JobEvent, { type: 'done' }>): void => {
    choice.promptTokens = event.promptTokens;
    choice.completionTokens = event.completionTokens;
    deps.metrics.promptTokens.inc({ model_kind: resolved.kind }, event.promptTokens);
    deps.metrics.generatedTokens.inc({ model_kind: resolved.kind }, event.completionTokens);
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
        failure ??= new HttpError(event.status, event.message, { code: event.code });
        log.error({ jobId: event.jobId, status: event.status, code: event.code, err: event.message }, 'completion job failed');
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
      for (const submitted of choices.slice(0, i)) deps.backend.cancel(submitted.job.id);
      if (cause instanceof QueueFullError) {
        const retryAfterSeconds = Math.max(1, Math.ceil(cause.retryAfterSeconds));
        throw new HttpError(429, `the server is busy: ${cause.message}; retry after ${retryAfterSeconds} s`, {
          code: 'queue_full',
          headers: { 'Retry-After': String(retryAfterSeconds) },
          cause,
        });
      }
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
