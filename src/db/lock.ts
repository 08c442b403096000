/**
 * The runner's advisory lock, and who blocks whom.
 *
 * The lock is session-level, keyed on the history table's qualified name, so
 * two runners never apply the same migration. The waiter polls
 * pg_try_advisory_lock between short sleeps instead of blocking in
 * pg_advisory_lock: a session blocked inside a statement keeps a snapshot
 * open, and CREATE INDEX CONCURRENTLY in the lock holder waits for every such
 * snapshot to end, a deadlock (golang-migrate #235, Flyway #1654;
 * https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY).
 */

import type { Sql } from "./connect.ts";
import { type HistoryTables, literal } from "./history.ts";
import { type BlockingSession, ManagedMigrateError } from "../errors.ts";
import { humanDuration } from "../config.ts";
import { LOCK_MODES } from "./lock_modes.ts";

/** A 64-bit advisory lock key derived from the history table's qualified name. */
export async function lockKey(t: HistoryTables): Promise<bigint> {
  const bytes = new TextEncoder().encode(`managed-migrate:${t.migrations}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return new DataView(digest.buffer).getBigInt64(0);
}

/** Options for acquireLock(). */
export interface AcquireOptions {
  /** Give up after this long (undefined: wait as long as it takes). */
  waitTimeoutMs?: number;
  signal?: AbortSignal;
  /** Called once when the lock is taken by someone else, with who holds it. */
  onWait?: (holders: BlockingSession[]) => void;
}

const POLL_MS = 200;

/**
 * Takes the advisory lock, polling. Returns once held. Never blocks inside a
 * statement; throws ManagedMigrateError (exit 1) after `waitTimeoutMs` and
 * the signal's reason when aborted.
 */
export async function acquireLock(
  sql: Sql,
  key: bigint,
  options: AcquireOptions = {},
): Promise<void> {
  const started = Date.now();
  let told = false;
  while (true) {
    const [row] =
      await sql`select pg_try_advisory_lock(${key.toString()}::bigint) as ok`;
    if (row.ok) return;
    options.signal?.throwIfAborted();
    if (!told) {
      told = true;
      options.onWait?.(await advisoryLockHolders(sql, key));
    }
    if (
      options.waitTimeoutMs !== undefined &&
      Date.now() - started >= options.waitTimeoutMs
    ) {
      const holders = await advisoryLockHolders(sql, key);
      throw new ManagedMigrateError(
        `Another managed-migrate still holds the migration lock after ${
          humanDuration(options.waitTimeoutMs)
        }${
          describeHolders(holders)
        }: wait for it to finish or raise --wait-timeout`,
        1,
        { holders },
      );
    }
    await sleep(POLL_MS, options.signal);
  }
}

/** Releases the advisory lock; never throws (the first error of a run wins). */
export async function releaseLock(sql: Sql, key: bigint): Promise<void> {
  try {
    await sql`select pg_advisory_unlock(${key.toString()}::bigint)`;
  } catch {
    // The session may be gone; a closed session releases its locks anyway.
  }
}

function describeHolders(holders: BlockingSession[]): string {
  return holders.length === 0
    ? ""
    : ` (pid ${holders.map((h) => h.pid).join(", ")})`;
}

const SESSION_COLUMNS = `
  a.pid,
  coalesce(a.application_name, '') as application_name,
  a.client_addr::text as client_addr,
  a.state,
  (extract(epoch from (clock_timestamp() - a.xact_start)) * 1000)::bigint as xact_age_ms,
  coalesce(a.query, '') as query`;

/** Maps a row of SESSION_COLUMNS. */
export function toBlockingSession(r: Record<string, unknown>): BlockingSession {
  return {
    pid: Number(r.pid),
    applicationName: String(r.application_name ?? ""),
    clientAddr: (r.client_addr as string | null) ?? null,
    state: (r.state as string | null) ?? null,
    transactionAgeMs: r.xact_age_ms === null ? null : Number(r.xact_age_ms),
    query: firstLine(String(r.query ?? "")),
  };
}

/** The sessions holding the advisory lock. */
export async function advisoryLockHolders(
  sql: Sql,
  key: bigint,
): Promise<BlockingSession[]> {
  const hi = Number(BigInt.asUintN(32, key >> 32n));
  const lo = Number(BigInt.asUintN(32, key));
  const rows = await sql.unsafe(
    `select ${SESSION_COLUMNS}
       from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.granted
        and l.classid::bigint = $1 and l.objid::bigint = $2 and l.objsubid = 1
        and l.pid <> pg_backend_pid()`,
    [hi, lo],
  );
  return rows.map(toBlockingSession);
}

/** The sessions that block backend `pid` right now (pg_blocking_pids). */
export async function blockersOf(
  sql: Sql,
  pid: number,
): Promise<BlockingSession[]> {
  const rows = await sql.unsafe(
    `select ${SESSION_COLUMNS} from pg_stat_activity a
      where a.pid = any(pg_blocking_pids($1)) order by a.xact_start`,
    [pid],
  );
  return rows.map(toBlockingSession);
}

/** A table a migration will lock, and in which mode (e.g. AccessExclusiveLock). */
export interface LockTarget {
  schema?: string;
  table: string;
  mode: string;
}

/**
 * Lock modes each mode conflicts with
 * (https://www.postgresql.org/docs/current/explicit-locking.html#TABLE-LOCK-COMPATIBILITY).
 */
const CONFLICTS: Record<string, readonly string[]> = {
  AccessShareLock: ["AccessExclusiveLock"],
  RowShareLock: ["ExclusiveLock", "AccessExclusiveLock"],
  RowExclusiveLock: [
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
  ],
  ShareUpdateExclusiveLock: [
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
  ],
  ShareLock: [
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
  ],
  ShareRowExclusiveLock: [
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
  ],
  ExclusiveLock: LOCK_MODES.slice(1),
  AccessExclusiveLock: LOCK_MODES,
};

/**
 * SQL listing the sessions that hold (granted) a lock conflicting with one
 * we are about to take on `targets`, inside a transaction older than
 * `minAgeMs`: long holders worth waiting for without queueing, not an
 * application's short query. Plain text with literals, so the runner can send
 * it in the same round trip as its BEGIN. Takes no lock itself.
 */
export function conflictingHoldersSql(
  targets: LockTarget[],
  minAgeMs: number,
): string {
  const rows = targets.map((t) => {
    const name = t.schema
      ? `${quoteName(t.schema)}.${quoteName(t.table)}`
      : quoteName(t.table);
    const modes = CONFLICTS[t.mode] ?? CONFLICTS.AccessExclusiveLock;
    return `(${literal(name)}, ${literal(modes.join(","))})`;
  });
  // Materialized CTEs evaluate to_regclass once, and pg_stat_get_activity(pid)
  // reads only the few sessions that hold a matching lock (the whole
  // pg_stat_activity view costs more than a round trip): this runs before every step.
  return `with target as materialized (
       select to_regclass(t.name) as oid, string_to_array(t.modes, ',') as modes
         from (values ${rows.join(", ")}) as t(name, modes)
     ), holder as materialized (
       select distinct l.pid from pg_locks l join target on l.relation = target.oid
        where l.granted and l.mode = any(target.modes) and l.pid <> pg_backend_pid()
          and l.database = (select oid from pg_database where datname = current_database())
     )
     select ${SESSION_COLUMNS}
       from holder, lateral pg_stat_get_activity(holder.pid) a
      where a.xact_start < clock_timestamp() - interval '${
    Math.max(0, Math.round(minAgeMs))
  } milliseconds'
      order by a.xact_start`;
}

/** Runs conflictingHoldersSql() on its own. */
export async function conflictingHolders(
  sql: Sql,
  targets: LockTarget[],
  minAgeMs: number,
): Promise<BlockingSession[]> {
  if (targets.length === 0) return [];
  const rows = await sql.unsafe(conflictingHoldersSql(targets, minAgeMs));
  return rows.map(toBlockingSession);
}

function quoteName(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name)
    ? name
    : `"${name.replaceAll('"', '""')}"`;
}

/** One line per blocker: `pid 4242 (psql, 127.0.0.1, idle in transaction for 8.1s): UPDATE ...`. */
export function describeBlocker(b: BlockingSession): string {
  const parts = [
    b.applicationName || undefined,
    b.clientAddr ?? undefined,
    b.state ?? undefined,
  ].filter(Boolean).join(", ");
  const age = b.transactionAgeMs === null
    ? ""
    : ` for ${humanDuration(b.transactionAgeMs)}`;
  return `pid ${b.pid} (${parts}${age})${b.query ? `: ${b.query}` : ""}`;
}

function firstLine(text: string): string {
  const line = text.trim().split("\n")[0].replace(/;+\s*$/, "");
  return line.length > 120 ? line.slice(0, 117) + "..." : line;
}

/** Sleeps `ms`, waking early (with the abort reason) when the signal fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
