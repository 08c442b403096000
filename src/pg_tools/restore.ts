/**
 * Restores a backup made by backupDatabase(), all or nothing.
 *
 * Flags, and why:
 * - `.sql`: `psql -X -q --no-password -v ON_ERROR_STOP=1 --single-transaction -f P`.
 *   The dump was written with `--clean --if-exists`, so it drops and recreates
 *   every object it contains: restoring twice gives the same result
 *   (idempotent). `ON_ERROR_STOP` + `--single-transaction` make the first
 *   error roll everything back; `-X` ignores the operator's ~/.psqlrc.
 * - `.dump`: `pg_restore --single-transaction --exit-on-error --clean
 *   --if-exists --no-password --dbname=DB P`: the same drop-and-recreate,
 *   in one transaction, stopping at the first error.
 * - Ownership and privileges are kept in both formats (no `--no-owner`,
 *   no `--no-acl`): restoring our own backup must give back the database as
 *   it was, not one owned by whoever ran the restore. A role that may not
 *   run an `ALTER ... OWNER TO` makes the whole restore fail and roll back,
 *   naming the statement.
 * - Objects created after the backup and not in it are left alone; one that
 *   depends on a restored object (say a new view on a restored table) makes
 *   the `DROP` fail, and the restore rolls back.
 */

import type { ConnectionInfo } from "../config.ts";
import { EXIT, ManagedMigrateError } from "../errors.ts";
import type { Reporter } from "../output/reporter.ts";
import { type BackupFormat, backupFormat } from "./dump.ts";
import { findPgTool, runPgTool } from "./exec.ts";

/** Options of restoreDatabase(). */
export interface RestoreOptions {
  info: ConnectionInfo;
  /** A `.sql` (plain) or `.dump` (custom format) backup. */
  path: string;
  /** Directory of the client binaries (--pg-bin / PG_BIN); default PATH. */
  pgBin?: string;
  reporter: Reporter;
  /** Aborting stops the tool; its transaction is rolled back by the server. */
  signal?: AbortSignal;
}

/** The magic bytes that start every pg_dump custom-format archive. */
const CUSTOM_MAGIC = "PGDMP";

/**
 * Checks a backup file before anything touches the database: it exists, is a
 * readable non-empty regular file whose extension matches its content.
 * Returns its format; throws a one-line error (exit 1, or 2 for a wrong
 * extension) saying why.
 */
export async function checkBackupFile(path: string): Promise<BackupFormat> {
  const format = backupFormat(path);
  const fail = (why: string) =>
    new ManagedMigrateError(
      `Cannot restore "${path}": ${why}`,
      EXIT.FAILURE,
      { path },
    );
  let head: Uint8Array;
  try {
    const stat = await Deno.stat(path);
    if (!stat.isFile) throw fail("it is not a regular file");
    if (stat.size === 0) throw fail("the file is empty");
    const file = await Deno.open(path, { read: true });
    try {
      head = new Uint8Array(5);
      const read = await file.read(head);
      head = head.subarray(0, read ?? 0);
    } finally {
      file.close();
    }
  } catch (error) {
    if (error instanceof ManagedMigrateError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw fail("the file does not exist");
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw fail("the file is not readable (permission denied)");
    }
    throw fail(error instanceof Error ? error.message : String(error));
  }
  const isCustom = new TextDecoder().decode(head) === CUSTOM_MAGIC;
  if (format === "custom" && !isCustom) {
    throw fail(
      "not a pg_dump custom-format archive (a .dump file must start with PGDMP): the file is corrupt or not a backup",
    );
  }
  if (format === "plain" && isCustom) {
    throw fail(
      "this is a pg_dump custom-format archive, not plain SQL: rename it to .dump",
    );
  }
  return format;
}

/**
 * Restores `path` into the database of `info` in one transaction: either the
 * whole backup is applied or nothing changes. Throws ToolError with the
 * tool's own error line when it fails.
 */
export async function restoreDatabase(
  options: RestoreOptions,
): Promise<{ path: string; durationMs: number }> {
  const { info, path, reporter, signal } = options;
  const format = await checkBackupFile(path);
  const tool = format === "plain" ? "psql" : "pg_restore";
  const binary = await findPgTool(tool, options.pgBin);
  signal?.throwIfAborted();
  const args = format === "plain"
    ? [
      "-X",
      "--quiet",
      "--no-password",
      "--set=ON_ERROR_STOP=1",
      "--single-transaction",
      `--file=${path}`,
    ]
    : [
      "--single-transaction",
      "--exit-on-error",
      "--clean",
      "--if-exists",
      "--no-password",
      // pg_restore without --dbname writes a script to stdout instead of
      // restoring; the name only, the password stays in PGPASSWORD.
      `--dbname=${dbnameArg(info.database)}`,
      path,
    ];
  const started = performance.now();
  const progress = await reporter.progress("Restoring", `${path}`);
  const ticker = reporter.interactive
    ? setInterval(() => {
      progress.message(
        `${path}, ${
          ((performance.now() - started) / 1000).toFixed(0)
        }s elapsed`,
      );
    }, 500)
    : undefined;
  try {
    await runPgTool({
      tool,
      path: binary,
      args,
      info,
      signal,
      what:
        `Cannot restore "${path}" into database "${info.database}" (nothing was changed)`,
    });
  } finally {
    if (ticker !== undefined) clearInterval(ticker);
    progress.finish();
  }
  return { path, durationMs: Math.round(performance.now() - started) };
}

/**
 * A database name for `--dbname`: libpq reads a value containing `=` or a
 * URL scheme as a connection string, so such names are quoted as one.
 */
function dbnameArg(database: string): string {
  if (!database.includes("=") && !/^postgres(ql)?:/i.test(database)) {
    return database;
  }
  return `dbname='${database.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}
