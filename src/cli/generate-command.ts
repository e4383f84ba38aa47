/**
 * `inducer generate` and `inducer score`: run the model (optionally with a module) from the
 * command line.
 * @module
 */
import type { Command } from 'commander';
import { fillPromptTemplate } from '../adapters/adapter-config.js';
import { generateBatch, scoreTokens } from '../runtime/generate.js';
import { IncrementalDetokenizer } from '../runtime/detokenizer.js';
import { loadModel, loadModuleFor, promptTokenIds, slotModuleOf } from '../runtime/loaded-model.js';
import { StopStringMatcher } from '../runtime/stop-strings.js';
import { collect, integerOption, numberOption, pathOption } from './options.js';
import { warnAboutIgnoredTensors } from './warnings.js';

interface GenerateOptions {
  model: string;
  adapter?: string;
  prompt: string;
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stop: string[];
}

interface ScoreOptions {
  model: string;
  adapter?: string;
  text: string;
  json?: boolean;
}

export function registerGenerateCommands(program: Command): void {
  program
    .command('generate')
    .description('generate a continuation of a prompt and print it (without the prompt) to stdout')
    .requiredOption('--model <dir>', 'Hugging Face model folder (config.json, safetensors weights, tokenizer)', pathOption('--model'))
    .option('--adapter <dir>', 'module folder to apply (inducer, prefix or LoRA)', pathOption('--adapter'))
    .requiredOption('--prompt <text>', 'prompt text; "" starts from the BOS token alone')
    .option('--max-tokens <n>', 'maximum number of new tokens', integerOption('--max-tokens', 0), 64)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy decoding', numberOption('--temperature', 0, 100), 1)
    .option('--top-p <p>', 'nucleus sampling mass in (0, 1]', numberOption('--top-p', Number.MIN_VALUE, 1), 1)
    .option('--top-k <k>', 'keep only the k most likely tokens; 0 keeps all', integerOption('--top-k', 0), 0)
    .option('--seed <s>', 'random seed for sampling', integerOption('--seed', 0))
    .option('--stop <text>', 'stop before this text (repeatable)', collect, [])
    .action(async (options: GenerateOptions) => {
      const model = await loadModel(options.model, { slotCapacity: 1 });
      warnAboutIgnoredTensors(model.ignoredTensors);
      const tuningModule = options.adapter ? await loadModuleFor(model, options.adapter) : null;
      const module = tuningModule ? slotModuleOf(tuningModule) : null;
      // A module's task settings apply as a served request would use them: its prompt template
      // wraps the prompt and its stop strings add to the ones given on the command line.
      const task = tuningModule?.config.task;
      const prompt = task?.prompt_template ? fillPromptTemplate(task.prompt_template, options.prompt) : options.prompt;
      const promptIds = promptTokenIds(model, prompt);
      const decode = (ids: readonly number[]): string => model.tokenizer.decode(ids);
      const detokenizer = new IncrementalDetokenizer(decode, promptIds);
      const matcher = new StopStringMatcher([...options.stop, ...(task?.stop ?? [])]);
      let stopped = false;
      await generateBatch(
        model.engine,
        [
          {
            promptIds,
            module,
            sampling: { temperature: options.temperature, topK: options.topK, topP: options.topP, seed: options.seed ?? null },
            maxNewTokens: options.maxTokens,
            stopTokenIds: model.tokenizer.eosTokenIds,
          },
        ],
        (_row, tokenId) => {
          const result = matcher.push(detokenizer.push(tokenId));
          process.stdout.write(result.emit);
          stopped = result.stopped;
          return stopped;
        },
      );
      if (!stopped) {
        const rest = matcher.push(detokenizer.flush());
        process.stdout.write(rest.emit + (rest.stopped ? '' : matcher.flush()));
      }
      process.stdout.write('\n');
      await model.engine.dispose();
    });

  program
    .command('score')
    .description('print the log-probability of each token of a text given the tokens before it')
    .requiredOption('--model <dir>', 'Hugging Face model folder', pathOption('--model'))
    .option('--adapter <dir>', 'module folder to apply (inducer, prefix or LoRA)', pathOption('--adapter'))
    .requiredOption('--text <text>', 'text to score')
    .option('--json', 'print {"tokens": [...], "logprobs": [...]} as one JSON object')
    .action(async (options: ScoreOptions) => {
      const model = await loadModel(options.model, { slotCapacity: 1 });
      warnAboutIgnoredTensors(model.ignoredTensors);
      const module = options.adapter ? slotModuleOf(await loadModuleFor(model, options.adapter)) : null;
      const tokens = model.tokenizer.encode(options.text);
      const logprobs = await scoreTokens(model.engine, tokens, module);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ tokens, logprobs })}\n`);
      } else {
        const total = logprobs.reduce((a, b) => a + b, 0);
        const mean = logprobs.length > 0 ? String(total / logprobs.length) : 'n/a (no token after the first)';
        process.stdout.write(`tokens: ${tokens.length}\nscored tokens: ${logprobs.length}\nsum logprob: ${total}\nmean logprob: ${mean}\n`);
      }
      await model.engine.dispose();
    });
}
