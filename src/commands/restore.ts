/** `restore --restore P` (or `restore P`): restore a backup in one transaction, after confirmation. */

import { humanDuration, resolveConnection } from "../config.ts";
import { connect } from "../db/connect.ts";
import { historyTables } from "../db/history.ts";
import {
  acquireLock,
  describeBlocker,
  lockKey,
  releaseLock,
} from "../db/lock.ts";
import { EXIT, UsageError } from "../errors.ts";
import { findPgTool } from "../pg_tools/exec.ts";
import { checkBackupFile, restoreDatabase } from "../pg_tools/restore.ts";
import type { CommandContext } from "./context.ts";

/**
 * Runs `restore`. Checks the file and the tool first, asks for confirmation
 * (a terminal) or requires --yes (none), then restores while holding the
 * migration advisory lock, so it never interleaves with a migrate.
 */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  args: string[],
): Promise<number> {
  const flag = typeof options.restore === "string"
    ? options.restore
    : undefined;
  if (flag !== undefined && args.length > 0) {
    throw new UsageError(
      `Cannot restore both "${flag}" (--restore) and "${
        args[0]
      }": pass the backup file once`,
    );
  }
  const path = flag ?? args[0];
  if (path === undefined || path === "") {
    throw new UsageError(
      "Missing the backup file: run managed-migrate restore --restore P (or restore P) with a .sql or .dump file",
    );
  }
  const format = await checkBackupFile(path);
  const info = resolveConnection(ctx.config.databaseUrl);
  await findPgTool("psql", ctx.config.pgBin);
  if (format === "custom") await findPgTool("pg_restore", ctx.config.pgBin);

  if (options.yes !== true) {
    if (!(Deno.stdin.isTerminal() && Deno.stderr.isTerminal())) {
      throw new UsageError(
        `Refusing to restore "${path}" into ${info.display} without confirmation: no terminal to ask on, pass --yes`,
      );
    }
    const { default: $ } = await import("dax");
    const ok = await $.maybeConfirm({
      message:
        `Restore "${path}" into ${info.display}? Every schema in the backup is emptied and returned to the backup's state`,
      default: false,
      signal: ctx.signal,
    });
    if (ok !== true) {
      ctx.reporter.warn("Restore cancelled: nothing was changed");
      return EXIT.FAILURE;
    }
  }

  const sql = await connect(info, {
    applicationName: "managed-migrate restore",
  });
  const key = await lockKey(historyTables(ctx.config.historySchema));
  try {
    await acquireLock(sql, key, {
      signal: ctx.signal,
      onWait: (holders) =>
        ctx.reporter.info(
          `Waiting for the migration lock held by ${
            holders.map(describeBlocker).join("; ") || "another session"
          }`,
        ),
    });
    const restored = await restoreDatabase({
      info,
      path,
      pgBin: ctx.config.pgBin,
      reporter: ctx.reporter,
      signal: ctx.signal,
    });
    ctx.reporter.result(
      { restore: restored },
      () =>
        `Restored "${restored.path}" into ${info.display} in ${
          humanDuration(restored.durationMs)
        }`,
    );
    return EXIT.OK;
  } finally {
    await releaseLock(sql, key);
    await sql.end({ timeout: 5 });
  }
}
