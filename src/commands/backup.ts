/** `backup [--backup-path P]`: pg_dump the database to a private file, atomically. */

import { humanDuration, resolveConnection } from "../config.ts";
import { EXIT } from "../errors.ts";
import { backupDatabase, humanBytes } from "../pg_tools/dump.ts";
import type { CommandContext } from "./context.ts";

/**
 * Runs `backup`. No advisory lock: pg_dump reads one consistent snapshot, so
 * a concurrent migrate cannot make the dump inconsistent, and migrate itself
 * calls backupDatabase() while holding the lock.
 */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  _args: string[],
): Promise<number> {
  const info = resolveConnection(ctx.config.databaseUrl);
  const path = typeof options.backupPath === "string"
    ? options.backupPath
    : undefined;
  const backup = await backupDatabase({
    info,
    path,
    pgBin: ctx.config.pgBin,
    reporter: ctx.reporter,
    signal: ctx.signal,
  });
  ctx.reporter.result(
    { backup },
    () =>
      `Backed up ${info.display} to "${backup.path}" (${
        humanBytes(backup.bytes)
      } in ${humanDuration(backup.durationMs)})`,
  );
  return EXIT.OK;
}
