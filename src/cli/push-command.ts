/**
 * `inducer push`: uploads a module folder to a running server with `PUT /v1/adapters/{name}`.
 * @module
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../adapters/module-files.js';
import { pathOption } from './options.js';

interface PushOptions {
  server?: string;
  apiKey?: string;
  name?: string;
}

/** Error for a failed push; the message names the file, server or response. */
export class PushError extends Error {
  override readonly name = 'PushError';
}

async function readPart(dir: string, file: string): Promise<Blob> {
  try {
    return new Blob([new Uint8Array(await readFile(path.join(dir, file)))]);
  } catch (cause) {
    throw new PushError(`failed to read ${path.join(dir, file)}: ${(cause as Error).message}; a module folder contains ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`, {
      cause,
    });
  }
}

/** Uploads a module folder and returns the server's description of the stored version. Throws {@link PushError}. */
export async function pushModule(options: { server: string; apiKey: string | null; name: string; dir: string }): Promise<Record<string, unknown>> {
  const form = new FormData();
  form.append(ADAPTER_CONFIG_FILE, await readPart(options.dir, ADAPTER_CONFIG_FILE), ADAPTER_CONFIG_FILE);
  form.append(ADAPTER_WEIGHTS_FILE, await readPart(options.dir, ADAPTER_WEIGHTS_FILE), ADAPTER_WEIGHTS_FILE);

  const url = new URL(`v1/adapters/${encodeURIComponent(options.name)}`, options.server.endsWith('/') ? options.server : `${options.server}/`);
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'PUT',
      headers: options.apiKey === null ? {} : { Authorization: `Bearer ${options.apiKey}` },
      body: form,
    });
  } catch (cause) {
    throw new PushError(`failed to reach ${url.origin}: ${(cause as Error).message}; check --server and that the server is running`, { cause });
  }
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
    throw new PushError(`server rejected the upload with status ${response.status}: ${typeof message === 'string' ? message : text.slice(0, 500)}`);
  }
  return (body ?? {}) as Record<string, unknown>;
}

export function registerPushCommand(program: Command): void {
  program
    .command('push')
    .description('upload a module folder to a running server (replaces a module of the same name atomically)')
    .argument('<dir>', `module folder with ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`)
    .option('--server <url>', 'server base URL, e.g. http://127.0.0.1:8000 (env INDUCER_SERVER)')
    .option('--api-key <key>', 'API key of your tenant (env INDUCER_API_KEY); not needed for a single-tenant server')
    .option('--name <name>', 'module name on the server (default: the folder name)', pathOption('--name'))
    .action(async (dir: string, options: PushOptions) => {
      const server = options.server ?? process.env.INDUCER_SERVER;
      if (server === undefined || server === '') throw new PushError('missing --server: pass the server URL, e.g. --server http://127.0.0.1:8000, or set INDUCER_SERVER');
      const apiKey = options.apiKey ?? process.env.INDUCER_API_KEY ?? null;
      const name = options.name ?? path.basename(path.resolve(dir));
      const stored = await pushModule({ server, apiKey: apiKey === '' ? null : apiKey, name, dir });
      process.stdout.write(`pushed ${name}: version ${String(stored.version)}, ${String(stored.size_bytes)} bytes\n`);
    });
}
