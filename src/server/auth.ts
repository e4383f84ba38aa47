/**
 * API keys and tenants. The key file is JSON: an array of
 * `{ "key_sha256": "<64 hex digits>", "tenant": "acme", "role": "user" | "admin" }`, holding only
 * SHA-256 hashes of the keys. Clients send a key as `Authorization: Bearer <key>`.
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { HttpError } from './errors.js';
import { NAME_PATTERN, NAME_RULE } from './schemas.js';

/** What a request may do: `user` manages its tenant's modules; `admin` may also list every tenant's. */
export type Role = 'user' | 'admin';

/** The authenticated caller. */
export interface Principal {
  readonly tenant: string;
  readonly role: Role;
}

/** Tenant of every request when the server runs without a key file. */
export const DEFAULT_TENANT = 'default';

const keyEntrySchema = z.strictObject({
  key_sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'expected the SHA-256 hash of the key as 64 hexadecimal digits, e.g. from `printf %s "$KEY" | sha256sum`'),
  tenant: z.string().regex(NAME_PATTERN, `a tenant name has ${NAME_RULE}`),
  role: z.enum(['user', 'admin']).default('user'),
});

const keyFileSchema = z.array(keyEntrySchema).min(1, 'expected at least one key entry');

/** Error for an API key file that cannot be read or is invalid; the message names the file and the entry. */
export class ApiKeyFileError extends Error {
  override readonly name = 'ApiKeyFileError';
}

/** Returns the lowercase hexadecimal SHA-256 of a key, the form the key file stores. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** Hashed API keys with their principals. */
export class ApiKeyTable {
  private readonly entries: readonly { hash: Buffer; principal: Principal }[];

  constructor(entries: readonly { keySha256: string; tenant: string; role: Role }[]) {
    this.entries = entries.map((entry) => ({
      hash: Buffer.from(entry.keySha256.toLowerCase(), 'hex'),
      principal: { tenant: entry.tenant, role: entry.role },
    }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** Returns the principal of a key, or null when no entry matches. Compares every entry in constant time. */
  lookup(key: string): Principal | null {
    const hash = createHash('sha256').update(key, 'utf8').digest();
    let found: Principal | null = null;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.hash, hash) && found === null) found = entry.principal;
    }
    return found;
  }
}

/** Parses the contents of a key file. Throws {@link ApiKeyFileError} naming the entry and field. */
export function parseApiKeys(raw: unknown, source: string): ApiKeyTable {
  const parsed = keyFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.length === 0 ? '(top level)' : issue.path.join('.')}: ${issue.message}`);
    throw new ApiKeyFileError(
      `invalid API key file ${source}: ${issues.join('; ')}; expected a JSON array of {"key_sha256", "tenant", "role"} objects`,
    );
  }
  const seen = new Set<string>();
  for (const [index, entry] of parsed.data.entries()) {
    const hash = entry.key_sha256.toLowerCase();
    if (seen.has(hash)) throw new ApiKeyFileError(`invalid API key file ${source}: entry ${index} repeats the hash of an earlier entry; remove one`);
    seen.add(hash);
  }
  return new ApiKeyTable(parsed.data.map((entry) => ({ keySha256: entry.key_sha256, tenant: entry.tenant, role: entry.role })));
}

/** Reads and parses a key file. Throws {@link ApiKeyFileError}. */
export async function loadApiKeys(file: string): Promise<ApiKeyTable> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new ApiKeyFileError(`failed to read API key file ${file}: ${(cause as Error).message}`, { cause });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ApiKeyFileError(`API key file ${file} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  return parseApiKeys(raw, file);
}

/**
 * Returns the principal of a request from its `Authorization` header. Without a key table
 * (single-tenant mode) every request, with or without a bearer token, is the `default` tenant's
 * admin. Throws a 401 {@link HttpError} for a missing, malformed or unknown key.
 */
export function authenticate(authorization: string | undefined, keys: ApiKeyTable | null): Principal {
  if (keys === null) return { tenant: DEFAULT_TENANT, role: 'admin' };
  if (authorization === undefined || authorization === '') {
    throw new HttpError(401, 'missing API key: send it as the header "Authorization: Bearer <key>"', { code: 'missing_api_key' });
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (match === null) {
    throw new HttpError(401, 'malformed Authorization header: expected "Bearer <key>"', { code: 'invalid_api_key' });
  }
  const principal = keys.lookup(match[1]);
  if (principal === null) {
    throw new HttpError(401, 'invalid API key: no key in the server\'s key file matches; check the key or ask the operator for one', {
      code: 'invalid_api_key',
    });
  }
  return principal;
}
