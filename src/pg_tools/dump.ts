/**
 * pg_dump backups you can trust: written to a 0600 temporary file beside the
 * target, fsynced, then renamed, so a failed or interrupted dump never leaves
 * a partial file where a good backup is expected. pg_dump's version is
 * checked against the server's before anything runs.
 */

import type { ConnectionInfo } from "../config.ts";
import { EXIT, ManagedMigrateError, ToolError, UsageError } from "../errors.ts";
import type { Progress, Reporter } from "../output/reporter.ts";
import { findPgTool, pgToolMajorVersion, runPgTool } from "./exec.ts";

/** What backupDatabase() wrote. */
export interface BackupResult {
  path: string;
  bytes: number;
  durationMs: number;
}

/** Options of backupDatabase(). */
export interface BackupOptions {
  info: ConnectionInfo;
  /** `.sql` (plain) or `.dump` (custom format); default `./backups/<database>-<UTC timestamp>.sql`. */
  path?: string;
  /** Directory of the client binaries (--pg-bin / PG_BIN); default PATH. */
  pgBin?: string;
  reporter: Reporter;
  /** Aborting stops pg_dump and removes the temporary file. */
  signal?: AbortSignal;
}

/** The two backup formats, chosen by the file's extension. */
export type BackupFormat = "plain" | "custom";

/** Directory of the default backups (created with mode 0700). */
export const DEFAULT_BACKUP_DIR = "backups";

/** The format a backup path asks for; any other extension is a UsageError naming the two choices. */
export function backupFormat(path: string): BackupFormat {
  if (/\.sql$/i.test(path)) return "plain";
  if (/\.dump$/i.test(path)) return "custom";
  throw new UsageError(
    `Invalid backup path "${path}": use a .sql file (plain SQL, restored with psql) or a .dump file (pg_dump custom format, restored with pg_restore)`,
  );
}

/** `backups/<database>-<UTC timestamp>.sql`, e.g. `backups/app-20241201T093000Z.sql`. */
export function defaultBackupPath(database: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const safe = database.replace(/[^A-Za-z0-9_.-]/g, "_") || "database";
  return `${DEFAULT_BACKUP_DIR}/${safe}-${stamp}.sql`;
}

/** Major version of the server, from `server_version_num` (150014 → 15). */
export async function serverMajorVersion(
  info: ConnectionInfo,
): Promise<number> {
  // Loaded here, not at the top: the check runs while pg_dump already works,
  // so postgres.js loads in parallel instead of delaying the dump.
  const { connect } = await import("../db/connect.ts");
  const sql = await connect(info, {
    applicationName: "managed-migrate backup",
  });
  try {
    const [row] = await sql<{ v: string }[]>`
      select current_setting('server_version_num') as v`;
    return majorOf(Number(row.v));
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function majorOf(versionNum: number): number {
  // 150014 is 15.14; 90624 (9.6.24) gives 9, compared with pg_dump 9.x alike.
  return Math.floor(versionNum / 10000);
}

/**
 * Checks that the pg_dump at `path` is not older than the server: an older
 * pg_dump refuses to dump a newer server.
 */
async function checkPgDumpVersion(
  path: string,
  options: { info: ConnectionInfo; serverVersionNum?: number },
): Promise<void> {
  const [clientMajor, serverMajor] = await Promise.all([
    pgToolMajorVersion("pg_dump", path),
    options.serverVersionNum === undefined
      ? serverMajorVersion(options.info)
      : Promise.resolve(majorOf(options.serverVersionNum)),
  ]);
  if (clientMajor < serverMajor) {
    throw new ToolError(
      `Cannot back up with pg_dump ${clientMajor} ("${path}"): the server runs PostgreSQL ${serverMajor}: install the PostgreSQL ${serverMajor} client (pg_dump ${serverMajor} or newer) and put it on PATH, or pass --pg-bin DIR (env PG_BIN)`,
      { tool: "pg_dump" },
    );
  }
}

/** pg_dump to a temp file beside `path`, fsync, rename, mode 0600; pg_dump older than the server is refused (checked while it starts). */
export async function backupDatabase(
  options: BackupOptions,
): Promise<BackupResult> {
  const started = performance.now();
  const { info, reporter, signal } = options;
  const path = options.path ?? defaultBackupPath(info.database);
  const format = backupFormat(path);
  if (options.path === undefined) await ensureDefaultDir();
  const dir = dirnameOf(path);
  await assertWritableDir(path, dir);
  const pgDump = await findPgTool("pg_dump", options.pgBin);
  signal?.throwIfAborted();

  const temp = await createPrivateTemp(path, dir);
  // The version check runs alongside pg_dump rather than before it: pg_dump
  // itself refuses a newer server before writing any data, so nothing is
  // lost, and the run is one round trip shorter. A failed check stops pg_dump
  // and its error (naming the fix) replaces pg_dump's.
  const stop = new AbortController();
  const dumpSignal = signal
    ? AbortSignal.any([signal, stop.signal])
    : stop.signal;
  let handle: Deno.FsFile | undefined;
  let flusher: Flusher | undefined;
  let progress: Progress | undefined;
  let ticker: ReturnType<typeof setInterval> | undefined;
  try {
    handle = await Deno.open(temp, { read: true });
    flusher = new Flusher(handle);
    if (reporter.interactive) {
      const bar = progress = await reporter.progress(
        "Backing up",
        info.display,
      );
      ticker = setInterval(async () => {
        const size = await Deno.stat(temp).then((s) => s.size, () => 0);
        bar.message(
          `${humanBytes(size)} written, ${
            ((performance.now() - started) / 1000).toFixed(0)
          }s elapsed`,
        );
      }, 250);
    }
    const dump = runPgTool({
      tool: "pg_dump",
      path: pgDump,
      args: [
        "--no-password",
        ...(format === "plain"
          ? ["--format=plain", "--clean", "--if-exists"]
          : ["--format=custom"]),
        `--file=${temp}`,
      ],
      info,
      signal: dumpSignal,
      what: `Cannot back up database "${info.database}" to "${path}"`,
    });
    dump.catch(() => {}); // settled below
    // Let dax spawn pg_dump before the check loads postgres.js: evaluating
    // that module on this thread would otherwise hold the spawn back.
    await new Promise((resolve) => setTimeout(resolve, 0));
    const check = checkPgDumpVersion(pgDump, options);
    check.catch((error) => stop.abort(error));
    const [checked, dumped] = await Promise.allSettled([check, dump]);
    if (checked.status === "rejected") throw checked.reason;
    if (dumped.status === "rejected") throw dumped.reason;
    await flusher.finish();
    await Deno.rename(temp, path);
    await fsyncDir(dir);
  } catch (error) {
    await flusher?.finish().catch(() => {});
    await Deno.remove(temp).catch(() => {});
    throw error;
  } finally {
    if (ticker !== undefined) clearInterval(ticker);
    progress?.finish();
    try {
      handle?.close();
    } catch {
      // already closed
    }
  }
  const bytes = (await Deno.stat(path)).size;
  return { path, bytes, durationMs: Math.round(performance.now() - started) };
}

/**
 * Flushes the dump to disk while pg_dump is still writing it (fdatasync every
 * FLUSH_EVERY_MS), so the final fsync has little left to do: a 100 MB plain
 * dump otherwise waits ~50 ms more for writeback after pg_dump exits.
 */
/** How often the dump is flushed while pg_dump writes it (500ms measured ~50ms slower on 140 MB). */
const FLUSH_EVERY_MS = 100;

class Flusher {
  #busy: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval>;

  constructor(private readonly file: Deno.FsFile) {
    this.#timer = setInterval(() => {
      this.#busy ??= file.syncData().catch(() => {}).finally(() => {
        this.#busy = undefined;
      });
    }, FLUSH_EVERY_MS);
  }

  /** Stops the periodic flush and fsyncs the file (data and metadata). */
  async finish(): Promise<void> {
    clearInterval(this.#timer);
    await this.#busy;
    await this.file.sync();
  }
}

function dirnameOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}

function basenameOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function ensureDefaultDir(): Promise<void> {
  try {
    // 0700: backups hold every row of the database.
    await Deno.mkdir(DEFAULT_BACKUP_DIR, { mode: 0o700 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new ManagedMigrateError(
        `Cannot create the backup directory "${DEFAULT_BACKUP_DIR}": ${
          reason(error)
        }: create it, or pass --backup-path`,
        EXIT.FAILURE,
        { path: DEFAULT_BACKUP_DIR },
      );
    }
  }
}

/** A missing or non-directory parent is one clear line, before pg_dump starts. */
async function assertWritableDir(path: string, dir: string): Promise<void> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch (error) {
    throw new ManagedMigrateError(
      error instanceof Deno.errors.NotFound
        ? `Cannot write backup "${path}": directory "${dir}" does not exist: create it, or choose another --backup-path`
        : `Cannot write backup "${path}": cannot access directory "${dir}": ${
          reason(error)
        }`,
      EXIT.FAILURE,
      { path },
    );
  }
  if (!stat.isDirectory) {
    throw new ManagedMigrateError(
      `Cannot write backup "${path}": "${dir}" is not a directory: choose another --backup-path`,
      EXIT.FAILURE,
      { path },
    );
  }
  const target = await Deno.stat(path).catch(() => undefined);
  if (target?.isDirectory) {
    throw new ManagedMigrateError(
      `Cannot write backup "${path}": it is a directory: name a .sql or .dump file`,
      EXIT.FAILURE,
      { path },
    );
  }
}

/**
 * Creates the temporary file with mode 0600 before pg_dump opens it, so the
 * dump is never readable by others, not even for a moment (pg_dump would
 * create it 0644 under the usual umask).
 */
async function createPrivateTemp(path: string, dir: string): Promise<string> {
  const suffix = crypto.randomUUID().slice(0, 8);
  const temp = `${dir}/.${basenameOf(path)}.${suffix}.tmp`;
  try {
    const file = await Deno.open(temp, {
      write: true,
      createNew: true,
      mode: 0o600,
    });
    file.close();
    await Deno.chmod(temp, 0o600);
  } catch (error) {
    const readOnly = error instanceof Deno.errors.PermissionDenied ||
      /read-only|EROFS|EACCES/i.test(String(error));
    throw new ManagedMigrateError(
      readOnly
        ? `Cannot write backup "${path}": directory "${dir}" is not writable (${
          reason(error)
        }): choose another --backup-path`
        : `Cannot write backup "${path}": ${reason(error)}`,
      EXIT.FAILURE,
      { path },
    );
  }
  return temp;
}

/** Makes the rename durable; best effort, as some filesystems refuse fsync on a directory. */
async function fsyncDir(dir: string): Promise<void> {
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  } catch {
    // Not every platform lets a directory be opened for fsync.
  }
}

function reason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // Deno appends the syscall and path: keep the OS's reason only.
  return message.replace(/:\s*(open|mkdir|stat|rename)\s+'.*'$/, "")
    .replace(/ \(os error \d+\)/, "");
}

/** `12.3 MB`, `840 kB`, `512 B` (decimal units, like du -h --si). */
export function humanBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
