/**
 * Module management: `PUT|GET|DELETE /v1/adapters/{name}` and `GET /v1/adapters`, always within
 * the caller's tenant. A module of another tenant is reported as not found.
 * @module
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import type { Express, Request, Response } from 'express';
import { AdapterError } from '../../adapters/module.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../../adapters/module-files.js';
import type { AdapterUpload, StoredAdapter } from '../../adapters/store.js';
import { contextOf, principalOf, type AppDeps } from '../context.js';
import { HttpError } from '../errors.js';
import { checkName, listAdaptersQuerySchema, parseRequest } from '../schemas.js';

const UPLOAD_FIELDS = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] as const;

/** JSON description of a stored module version. */
export function describeAdapter(adapter: StoredAdapter): Record<string, unknown> {
  const config = adapter.config;
  return {
    id: adapter.name,
    object: 'adapter',
    tenant: adapter.tenant,
    version: adapter.version,
    created: Math.floor(Date.parse(adapter.storedAt) / 1000),
    size_bytes: adapter.sizeBytes,
    method: config.method,
    key_rank: config.key_rank,
    value_rank: config.value_rank,
    lora_q: config.lora_q,
    task: config.task ?? null,
    base_model: { model_type: config.base_model.model_type, weights_sha256: config.base_model.weights_sha256 },
  };
}

/** Removes the server's folder paths from a message, leaving the file names, so errors do not reveal the server's file layout. */
function withoutServerPaths(message: string, dirs: readonly string[]): string {
  let result = message;
  for (const dir of dirs) result = result.replaceAll(`${dir}${path.sep}`, '').replaceAll(dir, '(upload folder)');
  return result;
}

/**
 * Maps a module validation failure to a 400 (or 500 for I/O failures) naming the upload field.
 * The validation messages start with the path of the file they are about; `stagingDir` is
 * removed from them.
 */
function uploadError(error: AdapterError, stagingDir: string, storeRoot: string): HttpError {
  const message = withoutServerPaths(error.message, [stagingDir, storeRoot]);
  if (error.reason === 'io') return new HttpError(500, `failed to store the module: ${message}`, { code: 'storage_error', cause: error });
  const code = error.reason === 'incompatible' ? 'incompatible_module' : 'invalid_module';
  const param = message.startsWith(ADAPTER_WEIGHTS_FILE) ? ADAPTER_WEIGHTS_FILE : message.startsWith(ADAPTER_CONFIG_FILE) ? ADAPTER_CONFIG_FILE : null;
  return new HttpError(400, `invalid module upload: ${message}`, { param, code, cause: error });
}

function tooLarge(limitBytes: number): HttpError {
  return new HttpError(
    413,
    `module upload is larger than the limit of ${limitBytes} bytes; raise the server's --max-upload-bytes or upload a smaller module`,
    { code: 'payload_too_large', headers: { Connection: 'close' } },
  );
}

/**
 * Streams the multipart body into the upload's staging folder. Resolves when both files are
 * written; rejects with an {@link HttpError} for unexpected, repeated, missing or oversized parts.
 */
function receiveUpload(req: Request, upload: AdapterUpload, maxUploadBytes: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, limits: { fileSize: maxUploadBytes } });
    } catch (cause) {
      reject(new HttpError(400, `invalid multipart request: ${(cause as Error).message}`, { code: 'invalid_request', cause }));
      return;
    }

    const received = new Set<string>();
    const writes: Promise<void>[] = [];
    const files: { part: Readable; file: WriteStream }[] = [];
    let numBodyBytes = 0;

    let failed = false;
    const fail = (error: HttpError): void => {
      if (failed) return;
      failed = true;
      req.unpipe(parser);
      // Stop reading the body: the error response closes the connection.
      req.off('data', countBytes);
      req.pause();
      for (const { part, file } of files) {
        part.unpipe(file);
        part.resume();
        file.destroy();
      }
      reject(error);
    };

    // The limit covers the whole body, files and multipart framing together, and is checked as
    // the bytes arrive, so a chunked body without Content-Length cannot exceed it either.
    function countBytes(chunk: Buffer): void {
      numBodyBytes += chunk.length;
      if (numBodyBytes > maxUploadBytes) fail(tooLarge(maxUploadBytes));
    }
    req.on('data', countBytes);
    req.on('error', (cause) => fail(new HttpError(400, `upload failed while reading the body: ${cause.message}`, { cause })));
    req.on('close', () => {
      if (!req.complete) fail(new HttpError(400, 'the client closed the connection before the upload was complete', { code: 'upload_incomplete' }));
    });

    parser.on('file', (field, stream) => {
      if (!(UPLOAD_FIELDS as readonly string[]).includes(field)) {
        stream.resume();
        fail(
          new HttpError(400, `unexpected multipart field ${JSON.stringify(field)}; send exactly the files ${UPLOAD_FIELDS.join(' and ')}`, {
            param: field,
            code: 'invalid_request',
          }),
        );
        return;
      }
      if (received.has(field)) {
        stream.resume();
        fail(new HttpError(400, `multipart field ${field} was sent twice; send each file once`, { param: field, code: 'invalid_request' }));
        return;
      }
      received.add(field);
      const file = createWriteStream(path.join(upload.dir, field));
      files.push({ part: stream, file });
      stream.on('limit', () => fail(tooLarge(maxUploadBytes)));
      // Busboy emits 'error' on the file stream when the body ends inside this part; without a
      // listener that error would be uncaught and end the process.
      stream.on('error', (cause: Error) => fail(new HttpError(400, `invalid multipart body: ${cause.message}`, { code: 'invalid_request', cause })));
      const write = new Promise<void>((resolveWrite, rejectWrite) => {
        file.on('finish', () => resolveWrite());
        file.on('error', rejectWrite);
      });
      // After a failure no code awaits the writes, and destroying a file rejects its write.
      write.catch(() => undefined);
      writes.push(write);
      stream.pipe(file);
    });
    parser.on('field', (field) => {
      fail(
        new HttpError(400, `unexpected form field ${JSON.stringify(field)}: send the module as the files ${UPLOAD_FIELDS.join(' and ')} (curl -F 'field=@path')`, {
          param: field,
          code: 'invalid_request',
        }),
      );
    });
    parser.on('error', (cause: Error) => fail(new HttpError(400, `invalid multipart body: ${cause.message}`, { code: 'invalid_request', cause })));
    parser.on('close', () => {
      if (failed) return;
      Promise.all(writes).then(
        () => {
          const missing = UPLOAD_FIELDS.filter((field) => !received.has(field));
          if (missing.length > 0) {
            fail(
              new HttpError(400, `missing multipart file field(s) ${missing.join(', ')}; send both ${UPLOAD_FIELDS.join(' and ')}`, {
                param: missing[0],
                code: 'invalid_request',
              }),
            );
            return;
          }
          if (!failed) resolve();
        },
        (cause: Error) =>
          fail(new HttpError(500, `failed to write the upload to disk: ${withoutServerPaths(cause.message, [upload.dir])}`, { code: 'storage_error', cause })),
      );
    });
    req.pipe(parser);
  });
}

export function registerAdapterRoutes(app: Express, deps: AppDeps, maxUploadBytes: number): void {
  app.put('/v1/adapters/:name', async (req: Request, res: Response) => {
    const name = checkName(String(req.params.name), 'name');
    const { tenant } = principalOf(res);
    if (name === deps.model.id) {
      throw new HttpError(400, `module name ${JSON.stringify(name)} is the base model's id; choose another name`, { param: 'name', code: 'invalid_name' });
    }
    if (!req.is('multipart/form-data')) {
      throw new HttpError(
        415,
        `expected Content-Type multipart/form-data with the files ${UPLOAD_FIELDS.join(' and ')}, got ${JSON.stringify(req.headers['content-type'] ?? '(none)')}`,
        { code: 'unsupported_media_type' },
      );
    }
    const declaredBytes = Number(req.headers['content-length'] ?? 0);
    if (declaredBytes > maxUploadBytes) throw tooLarge(maxUploadBytes);

    const upload = await deps.store.beginUpload(tenant, name);
    try {
      await receiveUpload(req, upload, maxUploadBytes);
    } catch (error) {
      await upload.abort();
      throw error;
    }

    let result: Awaited<ReturnType<AdapterUpload['commit']>>;
    try {
      result = await upload.commit();
    } catch (error) {
      if (error instanceof AdapterError) throw uploadError(error, upload.dir, deps.store.root);
      throw error;
    }
    const { adapter, replaced } = result;
    contextOf(res).log.info(
      { tenant, module: name, version: adapter.version, sizeBytes: adapter.sizeBytes, replacedVersion: replaced?.version ?? null },
      replaced === null ? 'module stored' : 'module replaced',
    );
    res.status(replaced === null ? 201 : 200).json(describeAdapter(adapter));
  });

  app.get('/v1/adapters', async (req: Request, res: Response) => {
    const query = parseRequest(listAdaptersQuerySchema, { ...req.query }, 'query');
    const principal = principalOf(res);
    if (query.all === 'true' && principal.role !== 'admin') {
      throw new HttpError(403, 'listing the modules of all tenants (all=true) requires an admin key', { param: 'all', code: 'forbidden' });
    }
    const adapters = query.all === 'true' ? await deps.store.listAll() : await deps.store.list(principal.tenant);
    res.json({ object: 'list', data: adapters.map(describeAdapter) });
  });

  app.get('/v1/adapters/:name', async (req: Request, res: Response) => {
    const name = checkName(String(req.params.name), 'name');
    const adapter = await deps.store.get(principalOf(res).tenant, name);
    if (adapter === null) throw moduleNotFound(name);
    res.json(describeAdapter(adapter));
  });

  app.delete('/v1/adapters/:name', async (req: Request, res: Response) => {
    const name = checkName(String(req.params.name), 'name');
    const { tenant } = principalOf(res);
    const deleted = await deps.store.delete(tenant, name);
    if (deleted === null) throw moduleNotFound(name);
    deps.backend.evictModule(deleted.key);
    contextOf(res).log.info({ tenant, module: name, version: deleted.version }, 'module deleted');
    res.json({ id: name, object: 'adapter', deleted: true });
  });
}

function moduleNotFound(name: string): HttpError {
  return new HttpError(404, `module ${JSON.stringify(name)} not found in your tenant; GET /v1/adapters lists your modules`, {
    param: 'name',
    code: 'module_not_found',
  });
}
