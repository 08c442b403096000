/** `baseline --to VERSION`: records migrations up to VERSION as applied without running them. */

import type { CommandContext } from "./context.ts";
import { idOf, loadStatus, openSession, readMigrations } from "./session.ts";
import { recordMigrationSql } from "../db/history.ts";
import {
  assertNoDrift,
  pendingMigrations,
  resolveTarget,
} from "../engine/plan.ts";

/** Runs `baseline`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  const migrations = await readMigrations(ctx);
  const session = await openSession(ctx, { write: true });
  try {
    const rows = await loadStatus(session, migrations);
    assertNoDrift(rows);
    const to = resolveTarget(migrations, [], String(options.to));
    const chosen = pendingMigrations(rows, to);
    if (chosen.length > 0) {
      await session.sql.unsafe(
        [
          "BEGIN",
          ...chosen.map((m) =>
            recordMigrationSql(session.tables, {
              version: m.version,
              name: m.name,
              checksum: m.checksum,
              durationMs: 0,
              state: "applied",
            })
          ),
          "COMMIT",
        ].join(";\n"),
      );
    }
    ctx.reporter.result(
      { baselined: chosen.map((m) => ({ version: m.version, name: m.name })) },
      () =>
        chosen.length === 0
          ? `Nothing to baseline: every migration up to ${to} is already recorded`
          : [
            `Recorded ${chosen.length} migration${
              chosen.length === 1 ? "" : "s"
            } as applied without running them:`,
            ...chosen.map((m) => `  ${idOf(m)}`),
          ].join("\n"),
    );
    return 0;
  } finally {
    await session.close();
  }
}
