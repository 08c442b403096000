/**
 * `migrate` (alias `up`): validate → lock → drift → guardrails → backup →
 * apply (SPEC §5). Nothing runs before every check has passed.
 */

import type { CommandContext } from "./context.ts";
import {
  idOf,
  loadStatus,
  openSession,
  readMigrations,
  type Session,
  timeoutSettings,
  took,
} from "./session.ts";
import { allowBreakingFromEnv } from "../config.ts";
import { connect } from "../db/connect.ts";
import { describeBlocker } from "../db/lock.ts";
import {
  assertNoDrift,
  pendingMigrations,
  resolveTarget,
} from "../engine/plan.ts";
import {
  type Direction,
  runInOneTransaction,
  type RunnerEvents,
  type RunnerOptions,
  runSteps,
  type StepResult,
} from "../engine/runner.ts";
import { GuardrailError, UsageError } from "../errors.ts";
import { compareVersions, type Migration } from "../files/discover.ts";
import type { Reporter } from "../output/reporter.ts";
import type { Finding } from "../guardrails/mod.ts";

/** Runs `migrate`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  const migrations = await readMigrations(ctx);
  const dryRun = options.dryRun === true;
  const strict = options.strict === true;
  const allowBreaking = options.allowBreaking === true ||
    allowBreakingFromEnv();
  // Validate the timeout flags before connecting.
  timeoutSettings(options);

  const session = await openSession(ctx, {
    write: !dryRun,
    waitTimeout: options.waitTimeout,
  });
  try {
    const rows = await loadStatus(session, migrations);
    assertNoDrift(rows);
    const to = options.to === undefined
      ? undefined
      : resolveTarget(migrations, [], String(options.to));
    const pending = pendingMigrations(rows, to);
    const skipped = pendingMigrations(rows).filter((m) => !pending.includes(m));
    // Merged branches bring older versions; they run in version order, but
    // say so: their author tested them before the newer ones existed.
    const newestApplied = rows.findLast((r) => r.state === "applied");
    for (const m of pending) {
      if (
        newestApplied && compareVersions(m.version, newestApplied.version) < 0
      ) {
        ctx.reporter.warn(
          `"${m.id}" is older than the applied "${newestApplied.version}_${newestApplied.name}": applying it out of order`,
        );
      }
    }

    if (pending.length === 0) {
      ctx.reporter.result(
        {
          applied: [],
          skipped: skipped.map(brief),
          backup: null,
          findings: [],
          dryRun,
        },
        () => "Up to date: no pending migrations",
      );
      return 0;
    }

    const guardrails = await import("../guardrails/mod.ts");
    const findings = await guardrails.checkMigrations(pending, {
      allowBreaking,
      strict,
    });
    const blocking = guardrails.blockingFindings(findings, strict);
    reportFindings(ctx.reporter, findings);

    if (options.singleTransaction === true) {
      const noTx = pending.find((m) => m.up.noTransaction);
      if (noTx) {
        throw new UsageError(
          `Cannot use --single-transaction: "${noTx.id}" is a no-transaction migration; run without --single-transaction`,
        );
      }
    }

    if (dryRun) {
      printPlan(ctx, pending, skipped, findings, blocking.length > 0);
      return blocking.length > 0 ? 3 : 0;
    }
    if (blocking.length > 0) throw refusal(blocking);

    const backup = options.backup === false
      ? null
      : await takeBackup(ctx, session, options);

    const runnerOptions = await runnerOptionsFor(ctx, session, "up", options);
    const applied = options.singleTransaction === true
      ? await runInOneTransaction(session.sql, pending, runnerOptions)
      : await runSteps(session.sql, pending, runnerOptions);

    ctx.reporter.result(
      {
        applied: applied.map(stepJson),
        skipped: skipped.map(brief),
        backup,
        findings,
        dryRun,
      },
      () => summary(applied, "Applied", "migration"),
    );
    return 0;
  } finally {
    await session.close();
  }
}

/** The pre-run backup, unless --no-backup (SPEC §5 step 5). */
export async function takeBackup(
  ctx: CommandContext,
  session: Session,
  options: Record<string, unknown>,
) {
  const { backupDatabase } = await import("../pg_tools/dump.ts");
  const result = await backupDatabase({
    info: session.info,
    path: options.backupPath === undefined
      ? undefined
      : String(options.backupPath),
    pgBin: ctx.config.pgBin,
    reporter: ctx.reporter,
    signal: ctx.signal,
  });
  ctx.reporter.info(
    `Backup written to ${result.path} ${took(result.durationMs)}`,
  );
  return result;
}

/**
 * The runner's options for a migrate or rollback run: timeouts from flags,
 * lock targets and created tables from the parser (so the runner waits
 * without queueing), a diagnostics session for naming blockers, step lines.
 */
export async function runnerOptionsFor(
  ctx: CommandContext,
  session: Session,
  direction: Direction,
  options: Record<string, unknown>,
): Promise<RunnerOptions> {
  const guardrails = await import("../guardrails/mod.ts");
  const sqlOf = (m: Migration) => direction === "up" ? m.upSql : m.downSql;
  return {
    tables: session.tables,
    direction,
    ...timeoutSettings(options),
    signal: ctx.signal,
    lockTargets: (m) => guardrails.lockedTables(sqlOf(m)),
    createdTables: (m) => guardrails.createdTables(sqlOf(m)),
    openDiagnostics: () =>
      connect(session.info, {
        applicationName: "managed-migrate (diagnostics)",
      }),
    events: direction === "up"
      ? stepEvents(ctx.reporter, "Applying", "Applied")
      : stepEvents(ctx.reporter, "Rolling back", "Rolled back"),
  };
}

/** Step lines on stderr: `Applying 2024..._x`, then `Applied ... (12ms)`. */
export function stepEvents(
  reporter: Reporter,
  doing: string,
  done: string,
): RunnerEvents {
  return {
    onStart: (m) => reporter.info(`${doing} ${m.id}`),
    onDone: (r) => reporter.info(`${done} ${idOf(r)} ${took(r.durationMs)}`),
    onRetry: (m, attempt, delay, blockers) =>
      reporter.warn(
        `Lock timeout on "${m.id}" (attempt ${attempt}); retrying in ${delay}ms${
          blockers.length > 0
            ? `: blocked by ${blockers.map(describeBlocker).join("; ")}`
            : ""
        }`,
      ),
    onWaiting: (m, blockers) =>
      reporter.info(
        `Waiting before "${m.id}" without queueing: ${
          blockers.map(describeBlocker).join("; ")
        }`,
      ),
  };
}

/** JSON of a finished step. */
export function stepJson(r: StepResult) {
  return {
    version: r.version,
    name: r.name,
    durationMs: Math.round(r.durationMs),
  };
}

function brief(m: Migration) {
  return { version: m.version, name: m.name };
}

/** `Applied 3 migrations`. */
export function summary(
  results: StepResult[],
  verb: string,
  noun: string,
): string {
  const n = results.length;
  return `${verb} ${n} ${noun}${n === 1 ? "" : "s"}`;
}

function reportFindings(reporter: Reporter, findings: Finding[]): void {
  for (const f of findings) {
    const line = `${f.file}:${f.line}:${f.column}: [${f.rule}]${
      f.allowed ? " (allowed)" : ""
    } ${f.message}`;
    if (f.severity === "error" && !f.allowed) reporter.error(line);
    else reporter.warn(line);
  }
}

function refusal(blocking: Finding[]): GuardrailError {
  const f = blocking[0];
  const more = blocking.length > 1 ? ` (and ${blocking.length - 1} more)` : "";
  return new GuardrailError(
    `Refusing to migrate: ${f.rule} at ${f.file}:${f.line}:${f.column}${more}: ${f.help}; or allow it with "-- managed-migrate: allow=${f.rule}", --allow-breaking or ALLOW_BREAKING_MIGRATIONS=true`,
    blocking,
  );
}

function printPlan(
  ctx: CommandContext,
  pending: Migration[],
  skipped: Migration[],
  findings: Finding[],
  refused: boolean,
): void {
  ctx.reporter.result(
    {
      applied: [],
      pending: pending.map((m) => ({
        version: m.version,
        name: m.name,
        sql: m.upSql,
      })),
      skipped: skipped.map(brief),
      backup: null,
      findings,
      dryRun: true,
    },
    () => {
      const lines = [
        `Dry run: ${pending.length} pending migration${
          pending.length === 1 ? "" : "s"
        }${
          refused ? " (guardrails would refuse this run)" : ""
        }; nothing was changed`,
      ];
      for (const m of pending) {
        lines.push(
          "",
          `-- ${m.id}${m.up.noTransaction ? " (no-transaction)" : ""}`,
          m.upSql.trimEnd(),
        );
      }
      return lines.join("\n");
    },
  );
}
