/**
 * File writes that survive a crash: data is flushed to disk before a folder is renamed into place.
 * @module
 */
import { open, type FileHandle } from 'node:fs/promises';

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

/** Writes `data` to a new file (failing if it exists) and flushes it to disk before closing. */
export async function writeFileSynced(file: string, data: Uint8Array | string): Promise<void> {
  const handle = await open(file, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flushes an existing file's contents to disk. */
export async function syncFile(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flushes a folder's entries (new files, renames) to disk. */
export async function syncFolder(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (cause) {
    // Some platforms and file systems do not support fsync on folders; the renames still happen there.
    const code = errorCode(cause);
    if (code === 'EISDIR' || code === 'EPERM' || code === 'EINVAL') return;
    throw cause;
  } finally {
    await handle?.close();
  }
}
