/**
 * Downloads model repositories from the Hugging Face Hub into `<modelsDir>/<repoId>/`: config.json,
 * the safetensors weights (one file or an index plus its shards) and the tokenizer files.
 *
 * Hub layout (as `huggingface_hub` uses it): files are served at
 * `{endpoint}/{repoId}/resolve/{revision}/{file}`, and the file list comes from
 * `{endpoint}/api/models/{repoId}/revision/{revision}` (`siblings[].rfilename`, `sha`). A resolve
 * response carries `X-Repo-Commit`. Git LFS files respond with a redirect to a CDN whose hop carries
 * `X-Linked-Etag` (the SHA-256 of the content) and `X-Linked-Size`. Other files carry `ETag` (the
 * git blob id) and `Content-Length`. A 404 names its cause in `X-Error-Code` (`RepoNotFound`,
 * `RevisionNotFound`, `EntryNotFound`), and 401/403 mean a private or gated repository.
 *
 * Downloads go to `<file>.incomplete` and resume with `Range: bytes=N-`. A finished file is renamed
 * into place only after its size (and SHA-256, when the hub gives one) match.
 * @module
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';
export const DEFAULT_MODELS_DIR = 'models';

const CONFIG_FILE = 'config.json';
const SINGLE_WEIGHTS_FILE = 'model.safetensors';
const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';
/** Tokenizer and generation files, downloaded when the repository has them. */
export const TOKENIZER_FILES: readonly string[] = [
  'tokenizer.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
  'generation_config.json',
];

const INCOMPLETE_SUFFIX = '.incomplete';
/** Record of a finished pull inside the model folder, read by {@link ensureModel}. */
const MANIFEST_FILE = '.inducer-download.json';
const MAX_REDIRECTS = 5;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const GIT_OBJECT_ID_PATTERN = /^[0-9a-f]{40}$/;
const TOKEN_HELP = 'set HF_TOKEN to an access token with read access (https://huggingface.co/settings/tokens)';

/** Category of a hub failure, so callers can react without parsing messages. */
export type HubErrorKind =
  /** 401 or 403: a private or gated repository, or a rejected token. */
  | 'auth'
  /** 404: the repository, the revision or a required file does not exist. */
  | 'not-found'
  /** The hub could not be reached or the connection closed early. Retried. */
  | 'network'
  /** No response or no data within the timeout. Retried. */
  | 'timeout'
  /** 429 or 5xx from the hub. Retried. */
  | 'server'
  /** The downloaded bytes do not match the size or SHA-256 the hub announced. */
  | 'integrity'
  /** Invalid input (repo id, revision) or a response that does not follow the hub protocol. */
  | 'invalid';

const RETRYABLE_KINDS: ReadonlySet<HubErrorKind> = new Set(['network', 'timeout', 'server']);

/** Error of a hub download. The message names the repository, the file or URL, and the fix. */
export class HubError extends Error {
  override readonly name = 'HubError';
  readonly kind: HubErrorKind;
  /** HTTP status of the failed response, or null when there was no response. */
  readonly status: number | null;
  /** The hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`), or null. */
  readonly hubErrorCode: string | null;

  constructor(kind: HubErrorKind, message: string, options: { status?: number; hubErrorCode?: string | null; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.status = options.status ?? null;
    this.hubErrorCode = options.hubErrorCode ?? null;
  }

  /** Tests whether another attempt may succeed (network errors, timeouts, 429 and 5xx). */
  get retryable(): boolean {
    return RETRYABLE_KINDS.has(this.kind);
  }
}

/** Progress of a pull, in the order the events happen. Byte counts include bytes resumed from a partial file. */
export type PullEvent =
  | { readonly type: 'listing'; readonly source: 'api' | 'probe'; readonly commit: string | null; readonly reason?: string }
  | { readonly type: 'file-start'; readonly file: string; readonly sizeBytes: number | null; readonly offsetBytes: number }
  | { readonly type: 'file-progress'; readonly file: string; readonly receivedBytes: number; readonly sizeBytes: number | null }
  | { readonly type: 'file-done'; readonly file: string; readonly sizeBytes: number; readonly skipped: boolean }
  | {
      readonly type: 'retry';
      readonly file: string;
      readonly attempt: number;
      readonly maxRetries: number;
      readonly delayMs: number;
      readonly error: HubError;
    }
  /** A file that an earlier pull of this folder downloaded and the current revision no longer lists. */
  | { readonly type: 'file-removed'; readonly file: string };

export interface PullOptions {
  /** Branch, tag or commit. Default `main`. */
  revision?: string;
  /** Folder that contains the `<repoId>/` folders. Default `$INDUCER_MODELS_DIR`, else `models`, relative to the working directory. */
  modelsDir?: string;
  /** Hub base URL. Default `$HF_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** Bearer token. Default `$HF_TOKEN`. Pass null to send no token. */
  token?: string | null;
  /** Maximum time without a response or without new bytes before a request fails, in milliseconds. Default 30000. */
  timeoutMs?: number;
  /** Retries of a file after a network error, timeout, 429 or 5xx, each resuming the partial file. Default 3. */
  maxRetries?: number;
  /** Delay before the first retry in milliseconds, doubled for each further retry. Default 1000. */
  retryDelayMs?: number;
  onProgress?: (event: PullEvent) => void;
}

/** One file of a finished pull. */
export interface PulledFile {
  readonly name: string;
  readonly sizeBytes: number;
  /** SHA-256 (hex) of the content when it was computed, or null for a skipped file whose hub ETag is not a SHA-256. */
  readonly sha256: string | null;
  /** True when the local copy was already complete and nothing was downloaded. */
  readonly skipped: boolean;
}

export interface PullResult {
  /** Absolute path of the model folder. */
  readonly dir: string;
  /** Commit the files were downloaded from, when the hub reported it. */
  readonly commit: string | null;
  readonly files: readonly PulledFile[];
}

/** Contents of {@link MANIFEST_FILE}. */
interface Manifest {
  readonly repoId: string;
  readonly revision: string;
  readonly commit: string | null;
  readonly files: readonly { readonly name: string; readonly sizeBytes: number }[];
}

/** Settings and state shared by the requests of one pull. */
interface PullContext {
  readonly repoId: string;
  readonly revision: string;
  readonly endpoint: string;
  readonly token: string | null;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly retryDelayMs: number;
  readonly dir: string;
  readonly emit: (event: PullEvent) => void;
  /** Revision put into resolve URLs: the commit once known, so every file comes from the same commit. */
  pinnedRevision: string;
  commit: string | null;
}

/** Size and checksum that the hub announces for one file before it is downloaded. */
interface RemoteFile {
  readonly name: string;
  readonly url: string;
  readonly sizeBytes: number | null;
  /** SHA-256 of the content (the ETag of a Git LFS file), or null. */
  readonly sha256: string | null;
  /** Git blob id (the ETag of a non-LFS file), or null. */
  readonly gitObjectId: string | null;
}

// #region public functions

/** Returns the folder a repository is downloaded to: `<modelsDir>/<repoId>`, absolute. */
export function modelDirFor(repoId: string, modelsDir?: string): string {
  validateRepoId(repoId);
  const root = modelsDir ?? nonEmpty(process.env.INDUCER_MODELS_DIR) ?? DEFAULT_MODELS_DIR;
  return path.resolve(root, ...repoId.split('/'));
}

/** Returns the download URL of one file: `{endpoint}/{repoId}/resolve/{revision}/{file}`. */
export function resolveUrl(endpoint: string, repoId: string, revision: string, file: string): string {
  const filePath = file.split('/').map(encodeURIComponent).join('/');
  return `${trimEndpoint(endpoint)}/${encodeRepoId(repoId)}/resolve/${encodeURIComponent(revision)}/${filePath}`;
}

/**
 * Downloads config.json, the safetensors weights and the tokenizer files of `repoId` into
 * {@link modelDirFor}. Files that are already complete (size and checksum) are skipped, partial
 * files are resumed, and files that an earlier pull into this folder downloaded but the revision no
 * longer has are removed.
 *
 * @throws HubError whose `kind` names the failure: `auth` (401/403), `not-found`, `network`,
 *   `timeout`, `server`, `integrity` or `invalid`. An `integrity` error (size or SHA-256 mismatch)
 *   deletes the partial file. `invalid` covers a bad repo id or revision, a repository without
 *   safetensors weights and a malformed index.
 */
export async function pullModel(repoId: string, options: PullOptions = {}): Promise<PullResult> {
  // NOTE: there is no lock on the folder, so two processes pulling into it at once write the same
  // `.incomplete` files and can corrupt each other's downloads.
  const ctx = createContext(repoId, options);
  await mkdir(ctx.dir, { recursive: true });

  const listing = await listRepoFiles(ctx);
  if (listing !== null) {
    ctx.commit = listing.commit;
    if (listing.commit !== null) ctx.pinnedRevision = listing.commit;
  }
  ctx.emit({ type: 'listing', source: listing === null ? 'probe' : 'api', commit: ctx.commit, reason: listing === null ? 'the file list API is unavailable' : undefined });
  if (listing !== null) checkListing(ctx, listing.files);

  const pulled: PulledFile[] = [];
  const fetchFile = async (name: string, required: boolean): Promise<PulledFile | null> => {
    const result = await downloadFile(ctx, name, required);
    if (result !== null) pulled.push(result);
    return result;
  };

  await fetchFile(CONFIG_FILE, true);
  for (const name of TOKENIZER_FILES) {
    if (listing === null || listing.files.has(name)) await fetchFile(name, listing !== null);
  }

  const hasSingleFile = listing === null ? (await fetchFile(SINGLE_WEIGHTS_FILE, false)) !== null : listing.files.has(SINGLE_WEIGHTS_FILE);
  if (listing !== null && hasSingleFile) await fetchFile(SINGLE_WEIGHTS_FILE, true);
  if (!hasSingleFile) {
    const index = await fetchFile(WEIGHTS_INDEX_FILE, listing !== null);
    if (index === null) {
      throw new HubError(
        'invalid',
        `${describeRepo(ctx)} has neither ${SINGLE_WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE}; inducer reads safetensors weights only, so pick a repository or revision that has them`,
      );
    }
    const shards = await readShardNames(ctx, path.join(ctx.dir, WEIGHTS_INDEX_FILE), listing?.files ?? null);
    for (const shard of shards) await fetchFile(shard, true);
  }

  await removeStaleFiles(ctx, pulled);
  const manifest: Manifest = {
    repoId: ctx.repoId,
    revision: ctx.revision,
    commit: ctx.commit,
    files: pulled.map((file) => ({ name: file.name, sizeBytes: file.sizeBytes })),
  };
  await writeFile(path.join(ctx.dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir: ctx.dir, commit: ctx.commit, files: pulled };
}

/**
 * Returns the model folder of `repoId`, downloading it with {@link pullModel} only when the folder
 * lacks a finished pull of `revision` or a file of that pull is missing or has the wrong size. A
 * complete folder is returned without any request, so a server can start offline.
 *
 * @throws HubError as {@link pullModel} does.
 */
export async function ensureModel(repoId: string, options: PullOptions = {}): Promise<string> {
  const dir = modelDirFor(repoId, options.modelsDir);
  const revision = options.revision ?? DEFAULT_REVISION;
  if (await isPullComplete(dir, repoId, revision)) return dir;
  return (await pullModel(repoId, options)).dir;
}

// #endregion
// #region settings and validation

function createContext(repoId: string, options: PullOptions): PullContext {
  const revision = options.revision ?? DEFAULT_REVISION;
  validateRevision(revision);
  const dir = modelDirFor(repoId, options.modelsDir);
  const endpoint = trimEndpoint(options.endpoint ?? nonEmpty(process.env.HF_ENDPOINT) ?? DEFAULT_HUB_ENDPOINT);
  if (!/^https?:\/\/[^/]+/.test(endpoint)) {
    throw new HubError('invalid', `hub endpoint "${endpoint}" is not an http(s) URL; set HF_ENDPOINT to a URL such as ${DEFAULT_HUB_ENDPOINT}`);
  }
  const token = options.token === undefined ? nonEmpty(process.env.HF_TOKEN) : nonEmpty(options.token ?? undefined);
  return {
    repoId,
    revision,
    endpoint,
    token,
    timeoutMs: options.timeoutMs ?? 30_000,
    maxRetries: options.maxRetries ?? 3,
    retryDelayMs: options.retryDelayMs ?? 1000,
    dir,
    emit: options.onProgress ?? (() => {}),
    pinnedRevision: revision,
    commit: null,
  };
}

function validateRepoId(repoId: string): void {
  // Hub names are letters, digits, '-', '_' and '.', with an optional "namespace/" in front.
  const segment = '[A-Za-z0-9][A-Za-z0-9._-]*';
  if (!new RegExp(`^(${segment}/)?${segment}$`).test(repoId) || repoId.includes('..')) {
    throw new HubError(
      'invalid',
      `invalid repository id "${repoId}"; expected "name" or "namespace/name" made of letters, digits, '-', '_' and '.', for example openai-community/gpt2`,
    );
  }
}

function validateRevision(revision: string): void {
  if (revision.trim() === '' || /[\s\u0000-\u001f]/.test(revision)) {
    throw new HubError('invalid', `invalid revision "${revision}"; pass a branch, tag or commit such as main`);
  }
}

function nonEmpty(value: string | undefined): string | null {
  return value === undefined || value.trim() === '' ? null : value;
}

function trimEndpoint(endpoint: string): string {
  return endpoint.replace(/\/+$/, '');
}

function encodeRepoId(repoId: string): string {
  return repoId.split('/').map(encodeURIComponent).join('/');
}

function describeRepo(ctx: PullContext): string {
  return `repository ${ctx.repoId} at revision ${ctx.revision}`;
}

// #endregion
// #region listing

/**
 * Fetches the repository's file names and commit from the model info API. Returns null when the API
 * cannot be used (network error, 5xx, a 404 without a hub error code as a plain mirror returns, or
 * an unexpected body), in which case the caller probes known file names.
 */
async function listRepoFiles(ctx: PullContext): Promise<{ files: Set<string>; commit: string | null } | null> {
  const url = `${ctx.endpoint}/api/models/${encodeRepoId(ctx.repoId)}/revision/${encodeURIComponent(ctx.revision)}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ctx.timeoutMs);
  let body: unknown;
  try {
    const { response } = await request(ctx, 'GET', url, {}, controller.signal, () => timer.refresh());
    const hubErrorCode = response.headers.get('x-error-code');
    if (response.status === 401 || response.status === 403 || (response.status === 404 && hubErrorCode !== null)) {
      await discardBody(response);
      throw statusError(ctx, response, 'the file list');
    }
    if (!response.ok) {
      await discardBody(response);
      return null;
    }
    body = await response.json();
  } catch (error) {
    if (error instanceof HubError && !error.retryable) throw error;
    // Network errors, timeouts and bodies that are not JSON all mean the caller probes file names instead.
    return null;
  } finally {
    clearTimeout(timer);
  }

  const siblings = (body as { siblings?: unknown } | null)?.siblings;
  if (!Array.isArray(siblings)) return null;
  const files = new Set<string>();
  for (const sibling of siblings) {
    const name = (sibling as { rfilename?: unknown } | null)?.rfilename;
    if (typeof name === 'string') files.add(name);
  }
  const sha = (body as { sha?: unknown }).sha;
  return { files, commit: typeof sha === 'string' && GIT_OBJECT_ID_PATTERN.test(sha) ? sha : null };
}

/** Rejects a listing without config.json or safetensors weights before anything is downloaded. */
function checkListing(ctx: PullContext, files: ReadonlySet<string>): void {
  if (!files.has(CONFIG_FILE)) {
    throw new HubError('invalid', `${describeRepo(ctx)} has no ${CONFIG_FILE}; inducer needs a transformers checkpoint with config.json at the repository root`);
  }
  if (files.has(SINGLE_WEIGHTS_FILE) || files.has(WEIGHTS_INDEX_FILE)) return;
  const otherWeights = [...files].filter((name) => /\.(bin|pt|pth|gguf|h5|msgpack|onnx)$/.test(name));
  const found = otherWeights.length > 0 ? ` (it has ${otherWeights.slice(0, 5).join(', ')})` : '';
  throw new HubError(
    'invalid',
    `${describeRepo(ctx)} has neither ${SINGLE_WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE}${found}; inducer reads safetensors weights only, so pick a repository or revision that has them or convert the weights with save_pretrained(..., safe_serialization=True)`,
  );
}

/** Reads the shard file names from a downloaded `model.safetensors.index.json`, sorted and without duplicates. */
async function readShardNames(ctx: PullContext, indexPath: string, listed: ReadonlySet<string> | null): Promise<string[]> {
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map?: unknown } | null)?.weight_map;
  } catch (cause) {
    throw new HubError('invalid', `${WEIGHTS_INDEX_FILE} of ${describeRepo(ctx)} is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new HubError('invalid', `${WEIGHTS_INDEX_FILE} of ${describeRepo(ctx)} has no "weight_map" object mapping tensor names to shard files`);
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    // Shard names become paths inside the model folder, so only plain file names are accepted.
    if (typeof shard !== 'string' || !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(shard)) {
      throw new HubError(
        'invalid',
        `${WEIGHTS_INDEX_FILE} of ${describeRepo(ctx)} maps tensor "${tensor}" to ${JSON.stringify(shard)}; expected a file name such as model-00001-of-00002.safetensors`,
      );
    }
    if (listed !== null && !listed.has(shard)) {
      throw new HubError('not-found', `${WEIGHTS_INDEX_FILE} of ${describeRepo(ctx)} names shard ${shard}, which the repository does not contain`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) {
    throw new HubError('invalid', `${WEIGHTS_INDEX_FILE} of ${describeRepo(ctx)} has an empty "weight_map"`);
  }
  return [...shards].sort();
}

// #endregion
// #region one file

/**
 * Downloads one file unless the local copy is complete. Returns null when `required` is false and
 * the hub reports that the file does not exist.
 */
async function downloadFile(ctx: PullContext, name: string, required: boolean): Promise<PulledFile | null> {
  let remote: RemoteFile;
  try {
    remote = await withRetries(ctx, name, () => fetchFileInfo(ctx, name));
  } catch (error) {
    const missingFile = error instanceof HubError && error.status === 404 && (error.hubErrorCode === null || error.hubErrorCode === 'EntryNotFound');
    if (!required && missingFile) return null;
    throw error;
  }

  const target = path.join(ctx.dir, name);
  const existing = await matchLocalFile(target, remote);
  if (existing !== null) {
    ctx.emit({ type: 'file-done', file: name, sizeBytes: existing.sizeBytes, skipped: true });
    return { name, sizeBytes: existing.sizeBytes, sha256: existing.sha256, skipped: true };
  }

  const partial = target + INCOMPLETE_SUFFIX;
  const { sizeBytes, sha256 } = await withRetries(ctx, name, () => transferFile(ctx, remote, partial));
  if (remote.sizeBytes !== null && sizeBytes !== remote.sizeBytes) {
    await rm(partial, { force: true });
    throw new HubError(
      'integrity',
      `${name} from ${describeRepo(ctx)} is ${sizeBytes} bytes but the hub announced ${remote.sizeBytes}; the partial file was deleted, run the pull again`,
    );
  }
  if (remote.sha256 !== null && sha256 !== remote.sha256) {
    await rm(partial, { force: true });
    throw new HubError(
      'integrity',
      `${name} from ${describeRepo(ctx)} has SHA-256 ${sha256} but the hub announced ${remote.sha256}; the partial file was deleted, run the pull again (if it fails again, the hub or a proxy serves corrupted data)`,
    );
  }
  await rename(partial, target);
  ctx.emit({ type: 'file-done', file: name, sizeBytes, skipped: false });
  return { name, sizeBytes, sha256, skipped: false };
}

/**
 * Sends HEAD to the resolve URL and reads commit, size and checksum. Same-origin redirects (a
 * renamed repository) are followed. A redirect to another origin is the Git LFS redirect to the CDN,
 * whose hop already carries `X-Linked-Etag` and `X-Linked-Size`, so it is not followed: a URL signed
 * for GET may reject HEAD.
 */
async function fetchFileInfo(ctx: PullContext, name: string): Promise<RemoteFile> {
  const url = resolveUrl(ctx.endpoint, ctx.repoId, ctx.pinnedRevision, name);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ctx.timeoutMs);
  try {
    const { response, linked } = await request(ctx, 'HEAD', url, {}, controller.signal, () => timer.refresh(), { sameOriginOnly: true });
    await discardBody(response);
    const isRedirect = response.status >= 300 && response.status < 400;
    if (!response.ok && !isRedirect) throw statusError(ctx, response, name);

    const commit = linked.commit;
    if (commit !== null && GIT_OBJECT_ID_PATTERN.test(commit) && ctx.commit === null) {
      ctx.commit = commit;
      ctx.pinnedRevision = commit;
    }
    const etag = normalizeEtag(linked.etag ?? response.headers.get('etag'));
    const sizeHeader = linked.sizeBytes ?? (isRedirect ? null : response.headers.get('content-length'));
    return {
      name,
      url,
      sizeBytes: parseSize(sizeHeader),
      sha256: etag !== null && SHA256_PATTERN.test(etag) ? etag : null,
      gitObjectId: etag !== null && GIT_OBJECT_ID_PATTERN.test(etag) ? etag : null,
    };
  } catch (error) {
    throw asHubError(error, controller.signal, ctx, `HEAD ${url}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Tests whether the file at `target` matches the hub's size and checksum. Returns its size and
 * SHA-256 when it does, and null when it is missing or different or when the hub gives nothing to
 * compare against.
 */
async function matchLocalFile(target: string, remote: RemoteFile): Promise<{ sizeBytes: number; sha256: string | null } | null> {
  const sizeBytes = await fileSize(target);
  if (sizeBytes === null) return null;
  if (remote.sizeBytes !== null && sizeBytes !== remote.sizeBytes) return null;
  if (remote.sha256 !== null) {
    const sha256 = await hashFile(createHash('sha256'), target);
    return sha256 === remote.sha256 ? { sizeBytes, sha256 } : null;
  }
  if (remote.gitObjectId !== null) {
    // A git blob id is the SHA-1 of "blob <size>\0" followed by the content.
    const hash = createHash('sha1').update(`blob ${sizeBytes}\0`);
    return (await hashFile(hash, target)) === remote.gitObjectId ? { sizeBytes, sha256: null } : null;
  }
  // NOTE: without a size or an ETag from the hub there is nothing to compare, so the file is downloaded again.
  return remote.sizeBytes !== null ? { sizeBytes, sha256: null } : null;
}

/**
 * Downloads `remote` into `partial`, resuming from the bytes already there. Returns the final size
 * and SHA-256 of the partial file. A connection that closes early leaves the partial file in place
 * and throws a retryable error.
 */
async function transferFile(ctx: PullContext, remote: RemoteFile, partial: string): Promise<{ sizeBytes: number; sha256: string }> {
  let offsetBytes = (await fileSize(partial)) ?? 0;
  if (remote.sizeBytes !== null && offsetBytes > remote.sizeBytes) {
    await rm(partial, { force: true });
    offsetBytes = 0;
  }
  let hash = createHash('sha256');
  if (offsetBytes > 0) await updateHashFromFile(hash, partial);
  if (remote.sizeBytes !== null && offsetBytes === remote.sizeBytes) {
    return { sizeBytes: offsetBytes, sha256: hash.digest('hex') };
  }

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ctx.timeoutMs);
  const headers: Record<string, string> = offsetBytes > 0 ? { range: `bytes=${offsetBytes}-` } : {};
  let receivedBytes = offsetBytes;
  let restart = false;
  try {
    const { response } = await request(ctx, 'GET', remote.url, headers, controller.signal, () => timer.refresh());
    let expectedBytes = remote.sizeBytes;
    if (response.status === 206) {
      const range = parseContentRange(response.headers.get('content-range'));
      if (range === null || range.start !== offsetBytes) {
        // The server sent a different range than requested, so the partial file cannot be continued.
        await discardBody(response);
        restart = true;
      } else {
        expectedBytes ??= range.total;
      }
    } else if (response.status === 416 && offsetBytes > 0) {
      // The server cannot continue at this offset, so the partial file is not a prefix of the file.
      await discardBody(response);
      restart = true;
    } else if (response.ok) {
      // A 200 to a Range request means the server ignored the range and sends the whole file.
      offsetBytes = 0;
      receivedBytes = 0;
      hash = createHash('sha256');
      expectedBytes ??= parseSize(response.headers.get('content-length'));
    } else {
      await discardBody(response);
      throw statusError(ctx, response, remote.name);
    }
    if (!restart) {
      return await writeBody(ctx, remote, partial, response, offsetBytes, hash, expectedBytes, (bytes) => {
        receivedBytes = bytes;
        timer.refresh();
      });
    }
  } catch (error) {
    throw asHubError(error, controller.signal, ctx, `download of ${remote.name}`, receivedBytes, remote.sizeBytes);
  } finally {
    clearTimeout(timer);
  }
  await rm(partial, { force: true });
  return transferFile(ctx, remote, partial);
}

/** Appends a response body to `partial` (truncating it when `offsetBytes` is 0), hashing as it writes. */
async function writeBody(
  ctx: PullContext,
  remote: RemoteFile,
  partial: string,
  response: Response,
  offsetBytes: number,
  hash: Hash,
  expectedBytes: number | null,
  onBytes: (receivedBytes: number) => void = () => {},
): Promise<{ sizeBytes: number; sha256: string }> {
  ctx.emit({ type: 'file-start', file: remote.name, sizeBytes: expectedBytes, offsetBytes });
  let receivedBytes = offsetBytes;
  const handle = await open(partial, offsetBytes > 0 ? 'a' : 'w');
  try {
    if (response.body !== null) {
      for await (const chunk of response.body) {
        await handle.write(chunk);
        hash.update(chunk);
        receivedBytes += chunk.byteLength;
        onBytes(receivedBytes);
        ctx.emit({ type: 'file-progress', file: remote.name, receivedBytes, sizeBytes: expectedBytes });
      }
    }
  } finally {
    await handle.close();
  }
  if (expectedBytes !== null && receivedBytes < expectedBytes) {
    throw new HubError(
      'network',
      `the connection closed after ${receivedBytes} of ${expectedBytes} bytes of ${remote.name}; the partial file ${partial} is kept, so run the pull again to resume`,
    );
  }
  return { sizeBytes: receivedBytes, sha256: hash.digest('hex') };
}

// #endregion
// #region HTTP

/** Headers collected along a redirect chain. The first hop that carries one wins. */
interface LinkedHeaders {
  commit: string | null;
  etag: string | null;
  sizeBytes: string | null;
}

/**
 * Sends a request and follows redirects by hand (at most {@link MAX_REDIRECTS}), so the token is sent
 * only to the hub's own origin and never to a CDN. With `sameOriginOnly`, a redirect to another
 * origin is returned instead of followed.
 */
async function request(
  ctx: PullContext,
  method: 'GET' | 'HEAD',
  url: string,
  extraHeaders: Record<string, string>,
  signal: AbortSignal,
  onResponse: () => void,
  options: { sameOriginOnly?: boolean } = {},
): Promise<{ response: Response; linked: LinkedHeaders }> {
  const hubOrigin = new URL(ctx.endpoint).origin;
  const linked: LinkedHeaders = { commit: null, etag: null, sizeBytes: null };
  let current = url;
  for (let hop = 0; ; hop++) {
    // Identity encoding keeps Content-Length and byte ranges about the stored bytes, not a compressed stream.
    const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'inducer-serve', ...extraHeaders };
    if (ctx.token !== null && new URL(current).origin === hubOrigin) headers.authorization = `Bearer ${ctx.token}`;
    let response: Response;
    try {
      response = await fetch(current, { method, headers, redirect: 'manual', signal });
    } catch (error) {
      throw asHubError(error, signal, ctx, `${method} ${current}`);
    }
    onResponse();
    linked.commit ??= response.headers.get('x-repo-commit');
    linked.etag ??= response.headers.get('x-linked-etag');
    linked.sizeBytes ??= response.headers.get('x-linked-size');

    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || location === null) return { response, linked };
    const next = new URL(location, current).toString();
    if (options.sameOriginOnly && new URL(next).origin !== new URL(current).origin) return { response, linked };
    if (hop >= MAX_REDIRECTS) {
      await discardBody(response);
      throw new HubError('invalid', `${method} ${url} redirected more than ${MAX_REDIRECTS} times; check HF_ENDPOINT`, { status: response.status });
    }
    await discardBody(response);
    current = next;
  }
}

async function discardBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => {});
}

/** Turns a failed response into a {@link HubError} whose message names the fix. */
function statusError(ctx: PullContext, response: Response, resource: string): HubError {
  const status = response.status;
  const hubErrorCode = response.headers.get('x-error-code');
  const options = { status, hubErrorCode };
  if (status === 401 || status === 403) {
    if (hubErrorCode === 'GatedRepo') {
      return new HubError('auth', `${ctx.repoId} is a gated repository (HTTP ${status}); accept its conditions on the model page and ${TOKEN_HELP}`, options);
    }
    const fix = ctx.token === null ? `if it is private or gated, ${TOKEN_HELP}` : 'the token in HF_TOKEN was rejected or lacks access to it, so check the token and its permissions';
    return new HubError('auth', `access to ${resource} of ${describeRepo(ctx)} was denied (HTTP ${status}): the repository does not exist or is private; ${fix}`, options);
  }
  if (status === 404) {
    if (hubErrorCode === 'RepoNotFound') {
      const fix = ctx.token === null ? `check the id, or ${TOKEN_HELP} if it is private` : 'check the id and that HF_TOKEN has access to it';
      return new HubError('not-found', `repository ${ctx.repoId} not found on ${ctx.endpoint} (HTTP 404); ${fix}`, options);
    }
    if (hubErrorCode === 'RevisionNotFound') {
      return new HubError('not-found', `revision ${ctx.revision} not found in repository ${ctx.repoId} (HTTP 404); pass an existing branch, tag or commit with --revision`, options);
    }
    return new HubError('not-found', `${resource} not found in ${describeRepo(ctx)} (HTTP 404); check the repository id and revision`, options);
  }
  if (status === 429 || status >= 500) {
    return new HubError('server', `${ctx.endpoint} returned HTTP ${status} for ${resource} of ${ctx.repoId}; try again later`, options);
  }
  return new HubError('invalid', `${ctx.endpoint} returned unexpected HTTP ${status} for ${resource} of ${ctx.repoId}; check HF_ENDPOINT`, options);
}

/** Wraps a fetch or stream error as a network or timeout {@link HubError}; a HubError passes through. */
function asHubError(error: unknown, signal: AbortSignal, ctx: PullContext, operation: string, receivedBytes?: number, sizeBytes?: number | null): HubError {
  if (error instanceof HubError) return error;
  const progress = receivedBytes !== undefined && receivedBytes > 0
    ? ` after ${receivedBytes}${sizeBytes ? ` of ${sizeBytes}` : ''} bytes; the partial file is kept, so run the pull again to resume`
    : '';
  if (signal.aborted) {
    return new HubError('timeout', `${operation} timed out: no data from ${new URL(ctx.endpoint).host} or its CDN for ${ctx.timeoutMs} ms${progress}`, { cause: error });
  }
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  const detail = code ?? (cause instanceof Error ? cause.message : String(cause));
  return new HubError('network', `${operation} failed (${detail})${progress || `; check the network connection and HF_ENDPOINT (${ctx.endpoint})`}`, { cause: error });
}

async function withRetries<T>(ctx: PullContext, file: string, run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (!(error instanceof HubError) || !error.retryable || attempt > ctx.maxRetries) throw error;
      const delayMs = ctx.retryDelayMs * 2 ** (attempt - 1);
      ctx.emit({ type: 'retry', file, attempt, maxRetries: ctx.maxRetries, delayMs, error });
      await sleep(delayMs);
    }
  }
}

/** Strips the weak marker and quotes from an ETag. */
function normalizeEtag(etag: string | null): string | null {
  if (etag === null) return null;
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '').toLowerCase();
}

function parseSize(value: string | null): number | null {
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  return Number(value);
}

/** Parses `bytes START-END/TOTAL`; TOTAL may be `*`. */
function parseContentRange(value: string | null): { start: number; total: number | null } | null {
  const match = value === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim());
  if (match === null) return null;
  return { start: Number(match[1]), total: match[3] === '*' ? null : Number(match[3]) };
}

// #endregion
// #region local files

async function fileSize(file: string): Promise<number | null> {
  try {
    const info = await stat(file);
    return info.isFile() ? info.size : null;
  } catch {
    return null;
  }
}

async function updateHashFromFile(hash: Hash, file: string): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
}

async function hashFile(hash: Hash, file: string): Promise<string> {
  await updateHashFromFile(hash, file);
  return hash.digest('hex');
}

async function readManifest(dir: string): Promise<Manifest | null> {
  try {
    const manifest = JSON.parse(await readFile(path.join(dir, MANIFEST_FILE), 'utf8')) as Manifest;
    return Array.isArray(manifest.files) ? manifest : null;
  } catch {
    return null;
  }
}

async function isPullComplete(dir: string, repoId: string, revision: string): Promise<boolean> {
  const manifest = await readManifest(dir);
  if (manifest === null || manifest.repoId !== repoId) return false;
  if (manifest.revision !== revision && manifest.commit !== revision) return false;
  for (const file of manifest.files) {
    if ((await fileSize(path.join(dir, file.name))) !== file.sizeBytes) return false;
  }
  return manifest.files.some((file) => file.name === CONFIG_FILE);
}

/** Deletes files that the previous pull into this folder listed and this pull does not, such as a single weights file replaced by shards. */
async function removeStaleFiles(ctx: PullContext, pulled: readonly PulledFile[]): Promise<void> {
  const previous = await readManifest(ctx.dir);
  if (previous === null) return;
  const current = new Set(pulled.map((file) => file.name));
  for (const { name } of previous.files) {
    // Names come from a file in the folder, so only plain file names are deleted.
    if (current.has(name) || typeof name !== 'string' || name.includes('/') || name.includes('\\') || name.startsWith('.')) continue;
    await rm(path.join(ctx.dir, name), { force: true });
    await rm(path.join(ctx.dir, name + INCOMPLETE_SUFFIX), { force: true });
    ctx.emit({ type: 'file-removed', file: name });
  }
}

// #endregion
