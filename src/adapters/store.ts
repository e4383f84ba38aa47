/**
 * Filesystem store of uploaded modules, one namespace per tenant:
 *
 *     <root>/<tenant>/<name>/current             id of the visible version (replaced by rename)
 *     <root>/<tenant>/<name>/versions/<id>/      adapter_config.json, adapter_model.safetensors
 *     <root>/.staging/<random>/                  uploads being received or validated
 *
 * An upload is validated in its staging folder before it becomes a version, and the `current`
 * pointer is replaced with one rename, so readers see the old version or the new one and never a
 * half-written module. Requests hold a lease on the version they use; a version that is no longer
 * current is deleted when its last lease is released.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ModelConfig } from '../model/config.js';
import type { BaseModelFingerprint } from '../model/fingerprint.js';
import { parseAdapterConfig, type AdapterConfig } from './adapter-config.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, readModule } from './module-files.js';
import { AdapterError } from './module.js';
import { syncFile, syncFolder } from '../util/durable-files.js';

/** Pattern of tenant and module names: one safe path segment. */
export const STORE_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;

const CURRENT_FILE = 'current';
const VERSIONS_FOLDER = 'versions';
const STAGING_FOLDER = '.staging';

/** One stored module version. Versions never change after they become visible. */
export interface StoredAdapter {
  readonly tenant: string;
  readonly name: string;
  /** Version id, unique within the store. */
  readonly version: string;
  /** Cache key of this version, `tenant/name@version`. */
  readonly key: string;
  /** Absolute path of the version folder. */
  readonly dir: string;
  readonly config: AdapterConfig;
  /** Size of adapter_model.safetensors in bytes. */
  readonly sizeBytes: number;
  /** Time the version was stored, ISO 8601. */
  readonly storedAt: string;
}

/** A version held by a request; the version stays on disk until `release` is called. */
export interface AdapterLease {
  readonly adapter: StoredAdapter;
  /** Ends the lease; calling it again does nothing. */
  release(): void;
}

/** An upload in a staging folder: write the two module files into `dir`, then commit or abort. */
export interface AdapterUpload {
  readonly dir: string;
  /**
   * Validates the files against the served model and makes them the current version.
   * Returns the new version and the version it replaced (null for a new name).
   * Throws {@link AdapterError} for an invalid or incompatible module; the staging folder is removed either way.
   */
  commit(): Promise<{ adapter: StoredAdapter; replaced: StoredAdapter | null }>;
  /** Removes the staging folder. */
  abort(): Promise<void>;
}

export interface AdapterStoreOptions {
  /** Folder of the store; created when missing. */
  readonly root: string;
  /** Served model that every module must match. */
  readonly model: ModelConfig;
  readonly fingerprint: BaseModelFingerprint;
  /** Called with a version's key after it was deleted from disk, so caches can drop it. */
  readonly onRetire?: (key: string) => void;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

function checkStoreName(value: string, what: 'tenant' | 'module'): void {
  if (!STORE_NAME_PATTERN.test(value)) {
    throw new AdapterError(
      `invalid ${what} name ${JSON.stringify(value)}: expected 1 to 64 characters from a-z, A-Z, 0-9, ".", "_" and "-", starting with a letter or digit`,
    );
  }
}

function newVersionId(): string {
  return `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** Returns the store time encoded in a version id, or the epoch for ids of another form. */
function storedAtOf(version: string): string {
  const millis = Number.parseInt(version.split('-')[0] ?? '', 36);
  return new Date(Number.isFinite(millis) ? millis : 0).toISOString();
}

/** Module store on the local filesystem. One process may use a store folder at a time. */
export class AdapterStore {
  readonly root: string;
  private readonly model: ModelConfig;
  private readonly fingerprint: BaseModelFingerprint;
  private readonly onRetire: (key: string) => void;
  /** Number of open leases by version key. */
  private readonly leases = new Map<string, number>();
  /** Tail of the queue of operations by `tenant/name`, so commits, deletes and lease grants of one name do not interleave. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Parsed adapter_config.json by version key; versions are immutable, so entries never go stale. */
  private readonly configs = new Map<string, AdapterConfig>();

  constructor(options: AdapterStoreOptions) {
    this.root = path.resolve(options.root);
    this.model = options.model;
    this.fingerprint = options.fingerprint;
    this.onRetire = options.onRetire ?? (() => undefined);
  }

  /**
   * Creates the store folder and removes leftovers of an earlier process: staging folders,
   * versions that are not current, and names without a current version.
   */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await rm(path.join(this.root, STAGING_FOLDER), { recursive: true, force: true });
    for (const tenant of await this.listFolders(this.root)) {
      if (!STORE_NAME_PATTERN.test(tenant)) continue;
      for (const name of await this.listFolders(path.join(this.root, tenant))) {
        if (!STORE_NAME_PATTERN.test(name)) continue;
        await this.withLock(tenant, name, () => this.removeStaleVersions(tenant, name));
      }
    }
  }

  /** Starts an upload of `tenant/name`. Throws {@link AdapterError} for an invalid name. */
  async beginUpload(tenant: string, name: string): Promise<AdapterUpload> {
    checkStoreName(tenant, 'tenant');
    checkStoreName(name, 'module');
    const version = newVersionId();
    const staging = path.join(this.root, STAGING_FOLDER, `${tenant}.${name}.${version}`);
    await mkdir(staging, { recursive: true });
    let finished = false;
    const abort = async (): Promise<void> => {
      finished = true;
      await rm(staging, { recursive: true, force: true });
    };
    return {
      dir: staging,
      abort,
      commit: async () => {
        if (finished) throw new Error(`upload of ${tenant}/${name} was already committed or aborted`);
        finished = true;
        try {
          return await this.commitStaged(tenant, name, version, staging);
        } finally {
          await rm(staging, { recursive: true, force: true });
        }
      },
    };
  }

  private async commitStaged(
    tenant: string,
    name: string,
    version: string,
    staging: string,
  ): Promise<{ adapter: StoredAdapter; replaced: StoredAdapter | null }> {
    // Validation reads the whole module, so it runs before taking the lock.
    const module = await readModule(staging, { model: this.model, fingerprint: this.fingerprint });
    await syncFile(path.join(staging, ADAPTER_CONFIG_FILE));
    await syncFile(path.join(staging, ADAPTER_WEIGHTS_FILE));

    return this.withLock(tenant, name, async () => {
      const nameDir = path.join(this.root, tenant, name);
      const replaced = await this.readCurrent(tenant, name);
      const versionDir = path.join(nameDir, VERSIONS_FOLDER, version);
      await mkdir(path.dirname(versionDir), { recursive: true });
      await rename(staging, versionDir);

      const pointerTemp = path.join(nameDir, `.${CURRENT_FILE}-${version}`);
      const handle = await open(pointerTemp, 'wx');
      try {
        await handle.writeFile(version);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(pointerTemp, path.join(nameDir, CURRENT_FILE));
      await syncFolder(nameDir);

      const key = versionKey(tenant, name, version);
      this.configs.set(key, module.config);
      const sizeBytes = (await stat(path.join(versionDir, ADAPTER_WEIGHTS_FILE))).size;
      const adapter: StoredAdapter = { tenant, name, version, key, dir: versionDir, config: module.config, sizeBytes, storedAt: storedAtOf(version) };
      await this.removeStaleVersions(tenant, name);
      return { adapter, replaced };
    });
  }

  /** Returns the current version of `tenant/name`, or null when there is none. Throws {@link AdapterError} for an invalid name. */
  async get(tenant: string, name: string): Promise<StoredAdapter | null> {
    checkStoreName(tenant, 'tenant');
    checkStoreName(name, 'module');
    return this.readCurrent(tenant, name);
  }

  /**
   * Leases the current version of `tenant/name`, or returns null when there is none. The
   * version's files stay on disk until the lease is released, even if the module is replaced
   * or deleted meanwhile.
   */
  async acquire(tenant: string, name: string): Promise<AdapterLease | null> {
    checkStoreName(tenant, 'tenant');
    checkStoreName(name, 'module');
    return this.withLock(tenant, name, async () => {
      const adapter = await this.readCurrent(tenant, name);
      if (adapter === null) return null;
      this.leases.set(adapter.key, (this.leases.get(adapter.key) ?? 0) + 1);
      let released = false;
      return {
        adapter,
        release: () => {
          if (released) return;
          released = true;
          const count = (this.leases.get(adapter.key) ?? 1) - 1;
          if (count > 0) {
            this.leases.set(adapter.key, count);
            return;
          }
          this.leases.delete(adapter.key);
          void this.withLock(tenant, name, () => this.removeStaleVersions(tenant, name)).catch(() => undefined);
        },
      };
    });
  }

  /** Lists the current versions of a tenant's modules, sorted by name. */
  async list(tenant: string): Promise<StoredAdapter[]> {
    checkStoreName(tenant, 'tenant');
    const adapters: StoredAdapter[] = [];
    for (const name of (await this.listFolders(path.join(this.root, tenant))).sort()) {
      if (!STORE_NAME_PATTERN.test(name)) continue;
      const adapter = await this.readCurrent(tenant, name);
      if (adapter !== null) adapters.push(adapter);
    }
    return adapters;
  }

  /** Lists the current versions of every tenant's modules, sorted by tenant and name. */
  async listAll(): Promise<StoredAdapter[]> {
    const adapters: StoredAdapter[] = [];
    for (const tenant of (await this.listFolders(this.root)).sort()) {
      if (STORE_NAME_PATTERN.test(tenant)) adapters.push(...(await this.list(tenant)));
    }
    return adapters;
  }

  /**
   * Makes `tenant/name` invisible and deletes its versions once no request holds them.
   * Returns the deleted current version, or null when there was none.
   */
  async delete(tenant: string, name: string): Promise<StoredAdapter | null> {
    checkStoreName(tenant, 'tenant');
    checkStoreName(name, 'module');
    return this.withLock(tenant, name, async () => {
      const current = await this.readCurrent(tenant, name);
      if (current === null) return null;
      await unlink(path.join(this.root, tenant, name, CURRENT_FILE));
      await this.removeStaleVersions(tenant, name);
      return current;
    });
  }

  /** Number of open leases on a version key, for tests and diagnostics. */
  leaseCount(key: string): number {
    return this.leases.get(key) ?? 0;
  }

  /** Reads the current pointer and the version's config; null when the name has no current version. */
  private async readCurrent(tenant: string, name: string): Promise<StoredAdapter | null> {
    const nameDir = path.join(this.root, tenant, name);
    let version: string;
    try {
      version = (await readFile(path.join(nameDir, CURRENT_FILE), 'utf8')).trim();
    } catch (cause) {
      if (errorCode(cause) === 'ENOENT' || errorCode(cause) === 'ENOTDIR') return null;
      throw new AdapterError(`failed to read the current version of module ${tenant}/${name}: ${(cause as Error).message}`, {
        cause,
        reason: 'io',
      });
    }
    const key = versionKey(tenant, name, version);
    const dir = path.join(nameDir, VERSIONS_FOLDER, version);
    let config = this.configs.get(key);
    if (config === undefined) {
      const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
      config = parseAdapterConfig(JSON.parse(await readFile(configFile, 'utf8')), configFile);
      this.configs.set(key, config);
    }
    const sizeBytes = (await stat(path.join(dir, ADAPTER_WEIGHTS_FILE))).size;
    return { tenant, name, version, key, dir, config, sizeBytes, storedAt: storedAtOf(version) };
  }

  /** Deletes versions that are neither current nor leased; removes the name folder when nothing is left. Call under the name's lock. */
  private async removeStaleVersions(tenant: string, name: string): Promise<void> {
    const nameDir = path.join(this.root, tenant, name);
    let current: string | null = null;
    try {
      current = (await readFile(path.join(nameDir, CURRENT_FILE), 'utf8')).trim();
    } catch (cause) {
      if (errorCode(cause) !== 'ENOENT') throw cause;
    }
    const versionsDir = path.join(nameDir, VERSIONS_FOLDER);
    let remaining = 0;
    for (const version of await this.listFolders(versionsDir)) {
      const key = versionKey(tenant, name, version);
      if (version === current || this.leaseCount(key) > 0) {
        remaining++;
        continue;
      }
      await rm(path.join(versionsDir, version), { recursive: true, force: true });
      this.configs.delete(key);
      this.onRetire(key);
    }
    for (const entry of await this.listFolders(nameDir, true)) {
      if (entry.startsWith(`.${CURRENT_FILE}-`)) await rm(path.join(nameDir, entry), { force: true });
    }
    if (current === null && remaining === 0) {
      await rm(nameDir, { recursive: true, force: true });
      this.configs.forEach((_config, key) => {
        if (key.startsWith(`${tenant}/${name}@`)) this.configs.delete(key);
      });
    }
  }

  /** Lists entries of a folder (only folders unless `allEntries`); a missing folder has none. */
  private async listFolders(dir: string, allEntries = false): Promise<string[]> {
    try {
      const entries = await readdir(dir, { withFileTypes: true });
      return entries.filter((entry) => allEntries || entry.isDirectory()).map((entry) => entry.name);
    } catch (cause) {
      if (errorCode(cause) === 'ENOENT' || errorCode(cause) === 'ENOTDIR') return [];
      throw cause;
    }
  }

  private async withLock<T>(tenant: string, name: string, work: () => Promise<T>): Promise<T> {
    const lockKey = `${tenant}/${name}`;
    const previous = this.locks.get(lockKey) ?? Promise.resolve();
    const result = previous.then(work, work);
    const tail = result.catch(() => undefined);
    this.locks.set(lockKey, tail);
    void tail.then(() => {
      if (this.locks.get(lockKey) === tail) this.locks.delete(lockKey);
    });
    return result;
  }
}

/** Cache key of a stored version. */
export function versionKey(tenant: string, name: string, version: string): string {
  return `${tenant}/${name}@${version}`;
}


