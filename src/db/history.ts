/**
 * The history store: `managed_migrations` and `seed_history` in the history
 * schema (SPEC §4).
 *
 * - ensureHistory() runs after the advisory lock is held, never in --dry-run.
 * - list*() never create anything: a missing table reads as empty history.
 * - Writes for a transactional step are SQL fragments the runner sends inside
 *   that step's own transaction, so the row commits with the schema change or
 *   not at all (golang-migrate `database/driver.go` contract).
 */

import type { Sql } from "./connect.ts";
import { quoteIdent } from "./connect.ts";

/** One row of managed_migrations. */
export interface AppliedMigration {
  version: string;
  name: string;
  checksum: string;
  appliedAt: Date;
  durationMs: number;
  appliedBy: string;
  /** `applied`, or `running` while (or after a crash during) a no-transaction migration. */
  state: "applied" | "running";
}

/** One row of seed_history. */
export interface AppliedSeed {
  name: string;
  checksum: string;
  appliedAt: Date;
  durationMs: number;
}

/** Qualified, quoted names of the history tables. */
export interface HistoryTables {
  schema: string;
  migrations: string;
  seeds: string;
}

/** The quoted table names in `schema`. */
export function historyTables(schema: string): HistoryTables {
  return {
    schema,
    migrations: `${quoteIdent(schema)}.managed_migrations`,
    seeds: `${quoteIdent(schema)}.seed_history`,
  };
}

/** Creates the schema and both tables if missing. Call while holding the advisory lock. */
export async function ensureHistory(sql: Sql, t: HistoryTables): Promise<void> {
  // client_min_messages hides the "already exists, skipping" notices.
  await sql.unsafe(`
    SET client_min_messages = warning;
    CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)};
    CREATE TABLE IF NOT EXISTS ${t.migrations} (
      version text PRIMARY KEY,
      name text NOT NULL,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      duration_ms integer NOT NULL DEFAULT 0,
      applied_by text NOT NULL DEFAULT current_user,
      state text NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'running'))
    );
    CREATE TABLE IF NOT EXISTS ${t.seeds} (
      name text PRIMARY KEY,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      duration_ms integer NOT NULL DEFAULT 0
    );
    RESET client_min_messages;
  `);
}

/** True when managed_migrations exists (without creating it). */
async function tableExists(sql: Sql, schema: string, table: string) {
  const [row] = await sql`
    select to_regclass(${`${quoteIdent(schema)}.${table}`}) is not null as ok`;
  return row.ok as boolean;
}

/** Every history row, oldest version first; empty when the table does not exist yet. */
export async function listApplied(
  sql: Sql,
  t: HistoryTables,
): Promise<AppliedMigration[]> {
  if (!await tableExists(sql, t.schema, "managed_migrations")) return [];
  const rows = await sql.unsafe(
    `select version, name, checksum, applied_at, duration_ms, applied_by, state
       from ${t.migrations}`,
  );
  return rows.map((r) => ({
    version: r.version,
    name: r.name,
    checksum: r.checksum,
    appliedAt: new Date(r.applied_at),
    durationMs: Number(r.duration_ms),
    appliedBy: r.applied_by,
    state: r.state,
  } as AppliedMigration)).sort((a, b) => compareNumeric(a.version, b.version));
}

/** Every seed_history row; empty when the table does not exist yet. */
export async function listSeeds(
  sql: Sql,
  t: HistoryTables,
): Promise<AppliedSeed[]> {
  if (!await tableExists(sql, t.schema, "seed_history")) return [];
  const rows = await sql.unsafe(
    `select name, checksum, applied_at, duration_ms from ${t.seeds} order by name`,
  );
  return rows.map((r) => ({
    name: r.name,
    checksum: r.checksum,
    appliedAt: new Date(r.applied_at),
    durationMs: Number(r.duration_ms),
  }));
}

function compareNumeric(a: string, b: string): number {
  try {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  } catch {
    return a < b ? -1 : a > b ? 1 : 0;
  }
}

/** A string literal; values here are digits, names and hex, but quote properly anyway. */
export function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * The time since the current query string started, in ms: sent in the same
 * string as the migration's SQL, it is that SQL's duration, measured by the
 * server, without a round trip of its own.
 */
export const ELAPSED_IN_QUERY_MS =
  "(extract(epoch from clock_timestamp() - statement_timestamp()) * 1000)::integer";

/**
 * SQL that records a migration as applied (or `running`), to be sent inside
 * the step's transaction. Re-recording a `running` row turns it `applied`.
 * `durationMs` is a number, or ELAPSED_IN_QUERY_MS.
 */
export function recordMigrationSql(
  t: HistoryTables,
  row: {
    version: string;
    name: string;
    checksum: string;
    durationMs: number | typeof ELAPSED_IN_QUERY_MS;
    state: "applied" | "running";
  },
): string {
  const duration = typeof row.durationMs === "number"
    ? String(Math.round(row.durationMs))
    : row.durationMs;
  return `INSERT INTO ${t.migrations} (version, name, checksum, duration_ms, state)
    VALUES (${literal(row.version)}, ${literal(row.name)}, ${
    literal(row.checksum)
  }, ${duration}, ${literal(row.state)})
    ON CONFLICT (version) DO UPDATE SET name = excluded.name,
      checksum = excluded.checksum, duration_ms = excluded.duration_ms,
      state = excluded.state, applied_at = now(), applied_by = current_user`;
}

/** SQL that forgets a migration (rollback, repair --rolled-back). */
export function forgetMigrationSql(t: HistoryTables, version: string): string {
  return `DELETE FROM ${t.migrations} WHERE version = ${literal(version)}`;
}

/** SQL that records a seed (insert, or update when re-run after a change). */
export function recordSeedSql(
  t: HistoryTables,
  row: { name: string; checksum: string; durationMs: number },
): string {
  return `INSERT INTO ${t.seeds} (name, checksum, duration_ms)
    VALUES (${literal(row.name)}, ${literal(row.checksum)}, ${
    Math.round(row.durationMs)
  })
    ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum,
      duration_ms = excluded.duration_ms, applied_at = now()`;
}
