/**
 * `repair VERSION --applied | --rolled-back`: resolves a migration left
 * `running` after a crash, once an operator has checked the database.
 */

import type { CommandContext } from "./context.ts";
import { openSession, readMigrations } from "./session.ts";
import { forgetMigrationSql, listApplied, literal } from "../db/history.ts";
import { UsageError } from "../errors.ts";

/** Runs `repair`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  args: string[],
): Promise<number> {
  const applied = options.applied === true;
  const rolledBack = options.rolledBack === true;
  if (applied === rolledBack) {
    throw new UsageError(
      "Say what happened: repair VERSION --applied or repair VERSION --rolled-back",
    );
  }
  const version = args[0];
  const migrations = await readMigrations(ctx);
  const session = await openSession(ctx, { write: true });
  try {
    const row = (await listApplied(session.sql, session.tables)).find((a) =>
      a.version === version ||
      (/^\d+$/.test(version) && BigInt(a.version) === BigInt(version))
    );
    if (!row || row.state !== "running") {
      throw new UsageError(
        `Migration "${version}" is not left running${
          row ? ` (it is ${row.state})` : " (it has no history row)"
        }: repair only resolves running migrations; see "managed-migrate status"`,
      );
    }
    if (applied) {
      const file = migrations.find((m) => m.version === row.version);
      await session.sql.unsafe(
        `UPDATE ${session.tables.migrations} SET state = 'applied'${
          file ? `, checksum = ${literal(file.checksum)}` : ""
        } WHERE version = ${literal(row.version)}`,
      );
    } else {
      await session.sql.unsafe(forgetMigrationSql(session.tables, row.version));
    }
    const state = applied ? "applied" : "pending";
    ctx.reporter.result(
      { version: row.version, name: row.name, state },
      () =>
        `Marked ${row.version}_${row.name} as ${
          applied ? "applied" : "rolled back (pending)"
        }`,
    );
    return 0;
  } finally {
    await session.close();
  }
}
