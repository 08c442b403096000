/**
 * `rollback` (alias `down`): newest first, each down in its own transaction
 * that also deletes its history row; backup first by default (SPEC §5).
 */

import type { CommandContext } from "./context.ts";
import {
  loadStatus,
  nonNegativeInt,
  openSession,
  readMigrations,
  timeoutSettings,
} from "./session.ts";
import { runnerOptionsFor, stepJson, summary, takeBackup } from "./migrate.ts";
import { driftOf, resolveTarget, rollbackSteps } from "../engine/plan.ts";
import { runSteps } from "../engine/runner.ts";
import { DriftError, UsageError } from "../errors.ts";

/** Runs `rollback`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  if (options.steps !== undefined && options.to !== undefined) {
    throw new UsageError("Use either --steps or --to, not both");
  }
  const steps = nonNegativeInt(options.steps, "--steps");
  if (steps === 0) {
    throw new UsageError('Invalid --steps "0": roll back at least 1');
  }
  const migrations = await readMigrations(ctx);
  const dryRun = options.dryRun === true;
  // Validate the timeout flags before connecting.
  timeoutSettings(options);
  const session = await openSession(ctx, {
    write: !dryRun,
    waitTimeout: options.waitTimeout,
  });
  try {
    const rows = await loadStatus(session, migrations);
    const running = driftOf(rows).find((r) => r.state === "running");
    if (running) {
      throw new DriftError(
        `Migration "${running.version}_${running.name}" was left running by an interrupted run: check the database, then run "managed-migrate repair ${running.version} --applied" or "--rolled-back" before rolling back`,
        [{ version: running.version, name: running.name, state: "running" }],
      );
    }
    const to = options.to === undefined ? undefined : resolveTarget(
      migrations,
      rows.flatMap((r) => r.applied ? [r.applied] : []),
      String(options.to),
    );
    const chosen = rollbackSteps(rows, { steps: steps ?? 1, to });
    for (const r of rows) {
      if (
        r.state === "changed" && chosen.some((m) => m.version === r.version)
      ) {
        ctx.reporter.warn(
          `"${r.version}_${r.name}" changed since it was applied; rolling back with its current down file`,
        );
      }
    }
    if (chosen.length === 0) {
      ctx.reporter.result(
        { rolledBack: [], skipped: [], backup: null, findings: [], dryRun },
        () => "Nothing to roll back",
      );
      return 0;
    }
    // Downs are never refused (undoing is destructive by nature), but the
    // operator sees what they drop before anything runs.
    const guardrails = await import("../guardrails/mod.ts");
    const findings = (await guardrails.lintFiles(
      chosen.map((m) => ({
        sql: m.downSql,
        file: m.downPath,
        directives: m.down,
      })),
      { allowBreaking: true, strict: false },
    )).filter((f) => guardrails.findRule(f.rule)?.family === "breaking");
    for (const f of findings) {
      ctx.reporter.warn(
        `${f.file}:${f.line}:${f.column}: ${f.rule}: ${f.message}`,
      );
    }
    if (dryRun) {
      ctx.reporter.result(
        {
          rolledBack: [],
          pending: chosen.map((m) => ({
            version: m.version,
            name: m.name,
            sql: m.downSql,
          })),
          skipped: [],
          backup: null,
          findings,
          dryRun: true,
        },
        () =>
          [
            `Dry run: would roll back ${chosen.length} migration${
              chosen.length === 1 ? "" : "s"
            }; nothing was changed`,
            ...chosen.flatMap((
              m,
            ) => ["", `-- ${m.id} (down)`, m.downSql.trimEnd()]),
          ].join("\n"),
      );
      return 0;
    }
    const backup = options.backup === false
      ? null
      : await takeBackup(ctx, session, options);
    const done = await runSteps(
      session.sql,
      chosen,
      await runnerOptionsFor(ctx, session, "down", options),
    );
    ctx.reporter.result(
      {
        rolledBack: done.map(stepJson),
        skipped: [],
        backup,
        findings: [],
        dryRun,
      },
      () => summary(done, "Rolled back", "migration"),
    );
    return 0;
  } finally {
    await session.close();
  }
}
