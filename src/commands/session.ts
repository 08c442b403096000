/**
 * What the database commands share: reading the db directory, opening the
 * session, holding the advisory lock, and the runner's timeout settings.
 */

import type { CommandContext } from "./context.ts";
import {
  type ConnectionInfo,
  env,
  humanDuration,
  parseDuration,
  resolveConnection,
} from "../config.ts";
import { connect, type Sql } from "../db/connect.ts";
import {
  ensureHistory,
  type HistoryTables,
  historyTables,
  listApplied,
} from "../db/history.ts";
import {
  acquireLock,
  describeBlocker,
  lockKey,
  releaseLock,
} from "../db/lock.ts";
import { UsageError } from "../errors.ts";
import {
  assertDbDir,
  discoverMigrations,
  type Migration,
} from "../files/discover.ts";
import { type MigrationStatus, migrationStatus } from "../engine/plan.ts";

/** An open session; `close()` releases the lock (if held) and disconnects. */
export interface Session {
  sql: Sql;
  info: ConnectionInfo;
  tables: HistoryTables;
  close(): Promise<void>;
}

/** Reads and validates the migrations of --dir (exit 4 on a bad file). */
export async function readMigrations(
  ctx: CommandContext,
): Promise<Migration[]> {
  await assertDbDir(ctx.config.dir);
  return await discoverMigrations(ctx.config.dir);
}

/**
 * Connects. With `write`, also takes the advisory lock (saying once who holds
 * it when we must wait) and creates the history tables. Never creates
 * anything without `write` (so --dry-run and status change nothing).
 */
export async function openSession(
  ctx: CommandContext,
  options: { write: boolean; waitTimeout?: unknown },
): Promise<Session> {
  const info = resolveConnection(ctx.config.databaseUrl);
  const tables = historyTables(ctx.config.historySchema);
  const sql = await connect(info, {
    onNotice: (message) => ctx.reporter.info(`notice: ${message}`),
  });
  let key: bigint | undefined;
  try {
    if (options.write) {
      key = await lockKey(tables);
      await acquireLock(sql, key, {
        waitTimeoutMs: optionalDuration(options.waitTimeout, "--wait-timeout"),
        signal: ctx.signal,
        onWait: (holders) =>
          ctx.reporter.info(
            `Waiting for another managed-migrate to finish${
              holders.length > 0
                ? `: ${holders.map(describeBlocker).join("; ")}`
                : ""
            }`,
          ),
      });
      await ensureHistory(sql, tables);
    }
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw error;
  }
  return {
    sql,
    info,
    tables,
    close: async () => {
      if (key !== undefined) await releaseLock(sql, key);
      await sql.end({ timeout: 5 }).catch(() => {});
    },
  };
}

/** Files joined with history. */
export async function loadStatus(
  session: Session,
  migrations: Migration[],
): Promise<MigrationStatus[]> {
  return migrationStatus(
    migrations,
    await listApplied(session.sql, session.tables),
  );
}

/** Parses an optional duration flag. */
export function optionalDuration(
  value: unknown,
  flag: string,
): number | undefined {
  return value === undefined ? undefined : parseDuration(String(value), flag);
}

/** Parses a non-negative integer flag. */
export function nonNegativeInt(
  value: unknown,
  flag: string,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new UsageError(
      `Invalid ${flag} "${value}": expected a whole number, 0 or more`,
    );
  }
  return n;
}

/** Lock/statement timeouts and retries from flags, then env, then defaults (SPEC §5). */
export function timeoutSettings(options: Record<string, unknown>) {
  return {
    lockTimeoutMs: optionalDuration(options.lockTimeout, "--lock-timeout") ??
      optionalDuration(
        env("MIGRATION_LOCK_TIMEOUT"),
        "MIGRATION_LOCK_TIMEOUT",
      ) ??
      1000,
    statementTimeoutMs:
      optionalDuration(options.statementTimeout, "--statement-timeout") ??
        optionalDuration(
          env("MIGRATION_STATEMENT_TIMEOUT"),
          "MIGRATION_STATEMENT_TIMEOUT",
        ) ?? 600_000,
    lockRetries: nonNegativeInt(options.lockRetries, "--lock-retries") ??
      nonNegativeInt(env("MIGRATION_LOCK_RETRIES"), "MIGRATION_LOCK_RETRIES") ??
      5,
  };
}

/** `202412010001_name` for display. */
export function idOf(x: { version: string; name: string }): string {
  return `${x.version}_${x.name}`;
}

/** `(12ms)` style suffix. */
export function took(ms: number): string {
  return `(${humanDuration(ms)})`;
}
