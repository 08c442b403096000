/**
 * Runs migration steps on one session.
 *
 * - A transactional step is BEGIN + SET LOCAL timeouts, the file's SQL, then
 *   its history write + COMMIT: the row commits with the change or not at all.
 * - A no-transaction step is recorded `running` first, then each statement is
 *   sent on its own, then it is recorded `applied` (or forgotten, for a down);
 *   a crash in between leaves `running` for `repair`.
 * - On lock_timeout (55P03) the step is rolled back, waits with backoff and
 *   jitter, and is retried; the history is untouched in between.
 * - Before each attempt it looks for sessions that have held a conflicting
 *   lock on the step's tables for a while and waits for them without joining
 *   the lock queue, so application queries never queue behind our DDL.
 * - It never leaves a transaction open and never swallows the first error.
 */

import type { Sql } from "../db/connect.ts";
import {
  ELAPSED_IN_QUERY_MS,
  forgetMigrationSql,
  type HistoryTables,
  recordMigrationSql,
} from "../db/history.ts";
import {
  blockersOf,
  conflictingHolders,
  conflictingHoldersSql,
  describeBlocker,
  type LockTarget,
  sleep,
  toBlockingSession,
} from "../db/lock.ts";
import { humanDuration, pgDuration } from "../config.ts";
import {
  type BlockingSession,
  DatabaseError,
  InterruptedError,
  LockTimeoutError,
  ManagedMigrateError,
} from "../errors.ts";
import type { Migration } from "../files/discover.ts";
import { errorLocation } from "./positions.ts";

/** Which file of each migration runs. */
export type Direction = "up" | "down";

/** One finished step. */
export interface StepResult {
  version: string;
  name: string;
  durationMs: number;
  /** 1 unless lock timeouts made it retry. */
  attempts: number;
}

/** Progress callbacks; the command turns them into output. */
export interface RunnerEvents {
  onStart?(migration: Migration): void;
  onDone?(result: StepResult): void;
  onRetry?(
    migration: Migration,
    attempt: number,
    delayMs: number,
    blockers: BlockingSession[],
  ): void;
  onWaiting?(migration: Migration, blockers: BlockingSession[]): void;
}

/** How steps run. */
export interface RunnerOptions {
  tables: HistoryTables;
  direction: Direction;
  /** Defaults; a file's directives override them. */
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  lockRetries: number;
  signal: AbortSignal;
  /** The tables a migration's SQL locks (from the parser); enables waiting without queueing. */
  lockTargets?: (migration: Migration) => Promise<LockTarget[]>;
  /**
   * The tables a migration creates. No session can have held a lock for long
   * on a table this run created moments ago, so later steps skip the check
   * for those (it costs a pg_locks scan per step on long histories).
   */
  createdTables?: (
    migration: Migration,
  ) => Promise<{ schema?: string; table: string }[]>;
  /** Opens a second session for diagnosing blockers (used only after a lock timeout). */
  openDiagnostics?: () => Promise<Sql>;
  events?: RunnerEvents;
}

/** A transaction older than this holding a conflicting lock is waited for, not queued behind. */
export const LONG_HOLDER_MS = 100;
const HOLDER_POLL_MS = 50;

const LOST_CONNECTION = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "ECONNRESET",
  "EPIPE",
  "57P01",
  "57P02",
  "57P03",
]);

/** Exponential backoff with ±25% jitter: 500ms, 1s, 2s, ... capped at 10s. */
export function backoffMs(attempt: number): number {
  const base = Math.min(10_000, 500 * 2 ** (attempt - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/**
 * Applies (or reverts) `migrations` in order, each in its own transaction
 * unless it is no-transaction. Returns the results; on failure throws the
 * step's error with `completed` (the steps that did commit) in its details.
 */
export async function runSteps(
  sql: Sql,
  migrations: Migration[],
  options: RunnerOptions,
): Promise<StepResult[]> {
  const runner = new StepRunner(sql, options);
  const results: StepResult[] = [];
  try {
    for (const migration of migrations) {
      options.signal.throwIfAborted();
      options.events?.onStart?.(migration);
      const result = await runner.run(migration);
      results.push(result);
      options.events?.onDone?.(result);
    }
    return results;
  } catch (error) {
    throw withCompleted(error, results, options.direction);
  } finally {
    await runner.close();
  }
}

/**
 * Applies every migration in ONE transaction (fresh databases in CI): all or
 * nothing. The caller refuses no-transaction migrations before calling.
 */
export async function runInOneTransaction(
  sql: Sql,
  migrations: Migration[],
  options: RunnerOptions,
): Promise<StepResult[]> {
  const runner = new StepRunner(sql, options);
  const results: StepResult[] = [];
  try {
    // One round trip per migration: its SQL, its history row and the next
    // migration's timeouts travel in one query string. The file's SQL comes
    // first, so server error positions still point into the file.
    let pending = `BEGIN; ${runner.setLocalTimeouts(migrations[0])}`;
    for (const migration of migrations) {
      options.signal.throwIfAborted();
      options.events?.onStart?.(migration);
      if (pending !== "") await runner.send(pending);
      const next = migrations[migrations.indexOf(migration) + 1];
      const nextTimeouts = next === undefined ||
          runner.setLocalTimeouts(next) === runner.setLocalTimeouts(migration)
        ? ""
        : `;\n${runner.setLocalTimeouts(next)}`;
      const started = performance.now();
      const file = runner.fileOf(migration);
      await runner.sendFile(migration, file, {
        sql: `${file.sql}\n;\n${
          runner.historySql(migration, ELAPSED_IN_QUERY_MS, "applied")
        }${nextTimeouts}`,
        offset: 0,
      });
      pending = "";
      const result = {
        version: migration.version,
        name: migration.name,
        durationMs: performance.now() - started,
        attempts: 1,
      };
      results.push(result);
    }
    await runner.send("COMMIT");
    for (const r of results) options.events?.onDone?.(r);
    return results;
  } catch (error) {
    await runner.rollbackQuietly();
    throw withCompleted(error, [], options.direction);
  } finally {
    await runner.close();
  }
}

/** Adds what did succeed to a failure (pressly/goose PartialError). */
function withCompleted(
  error: unknown,
  completed: StepResult[],
  direction: Direction,
): unknown {
  if (!(error instanceof ManagedMigrateError)) return error;
  const verb = direction === "up" ? "applied" : "rolled back";
  const done = completed.length === 0
    ? `nothing was ${verb}`
    : `${verb} before it: ${
      completed.map((r) => `${r.version}_${r.name}`).join(", ")
    }`;
  const wrapped = new ManagedMigrateError(
    `${error.message} (${done})`,
    error.exitCode,
    {
      ...error.details,
      [direction === "up" ? "applied" : "rolledBack"]: completed,
    },
  );
  return wrapped;
}

class StepRunner {
  #current: { cancel(): void } | undefined;
  #diagnostics: Sql | undefined;
  #lastBlockers: BlockingSession[] = [];
  #createdInRun = new Set<string>();
  #pid: number | undefined;
  #onAbort = () => this.#current?.cancel();

  constructor(readonly sql: Sql, readonly options: RunnerOptions) {
    options.signal.addEventListener("abort", this.#onAbort);
  }

  async close(): Promise<void> {
    this.options.signal.removeEventListener("abort", this.#onAbort);
    await this.#diagnostics?.end({ timeout: 1 }).catch(() => {});
  }

  fileOf(m: Migration) {
    return this.options.direction === "up"
      ? { path: m.upPath, sql: m.upSql, directives: m.up }
      : { path: m.downPath, sql: m.downSql, directives: m.down };
  }

  #timeouts(m: Migration) {
    const d = this.fileOf(m).directives;
    return {
      lock: d.lockTimeoutMs ?? this.options.lockTimeoutMs,
      statement: d.statementTimeoutMs ?? this.options.statementTimeoutMs,
    };
  }

  setLocalTimeouts(m: Migration): string {
    const t = this.#timeouts(m);
    return `SET LOCAL lock_timeout = '${
      pgDuration(t.lock)
    }'; SET LOCAL statement_timeout = '${pgDuration(t.statement)}'`;
  }

  historySql(
    m: Migration,
    durationMs: number | typeof ELAPSED_IN_QUERY_MS,
    state: "applied" | "running",
  ) {
    return this.options.direction === "up" || state === "running"
      ? recordMigrationSql(this.options.tables, {
        version: m.version,
        name: m.name,
        checksum: m.checksum,
        durationMs,
        state,
      })
      : forgetMigrationSql(this.options.tables, m.version);
  }

  /** Sends one query string; cancellable by the abort signal. */
  async send(text: string) {
    const query = this.sql.unsafe(text);
    this.#current = query;
    try {
      return await query;
    } finally {
      this.#current = undefined;
    }
  }

  /** Sends a file's SQL (or part of it), mapping errors into the file. */
  async sendFile(
    m: Migration,
    file: { path: string; sql: string },
    part = { sql: file.sql, offset: 0 },
  ) {
    try {
      await this.send(part.sql);
    } catch (error) {
      throw this.#explain(m, file, part.offset, error);
    }
  }

  async rollbackQuietly(): Promise<void> {
    try {
      await this.sql.unsafe("ROLLBACK");
    } catch {
      // The connection may be gone; the server rolls back on its own then.
    }
  }

  async run(m: Migration): Promise<StepResult> {
    const noTransaction = this.fileOf(m).directives.noTransaction;
    const targets = this.options.lockTargets
      ? (await this.options.lockTargets(m).catch(() => [])).filter((t) =>
        !this.#createdInRun.has(tableKey(t))
      )
      : [];
    const retries = Math.max(0, this.options.lockRetries);
    if (this.options.openDiagnostics) await this.pid();
    for (let attempt = 1;; attempt++) {
      this.options.signal.throwIfAborted();
      try {
        const durationMs = noTransaction
          ? await this.#runWithoutTransaction(m, targets, attempt)
          : await this.#runInTransaction(m, targets);
        for (const t of await this.options.createdTables?.(m) ?? []) {
          this.#createdInRun.add(tableKey(t));
        }
        return {
          version: m.version,
          name: m.name,
          durationMs,
          attempts: attempt,
        };
      } catch (caught) {
        // BEGIN/COMMIT and history writes fail too (a lost connection).
        const error = caught instanceof ManagedMigrateError ||
            caught instanceof RetryableLockTimeout
          ? caught
          : this.#explain(m, this.fileOf(m), 0, caught);
        if (!(error instanceof RetryableLockTimeout) || attempt > retries) {
          if (error instanceof RetryableLockTimeout) {
            throw await this.#lockTimeoutError(m, targets, attempt);
          }
          throw error;
        }
        const delay = backoffMs(attempt);
        const blockers = await this.#sampleBlockers(targets);
        this.options.events?.onRetry?.(m, attempt, delay, blockers);
        await sleep(delay, this.options.signal);
      }
    }
  }

  /** BEGIN (+ the long-holder check in the same round trip), SQL, history + COMMIT. */
  async #runInTransaction(
    m: Migration,
    targets: LockTarget[],
  ): Promise<number> {
    await this.#beginWhenNoLongHolders(m, targets);
    const watch = this.#watchBlockers(this.#timeouts(m).lock);
    try {
      // The SQL, its history row and COMMIT in one round trip; the file's SQL
      // comes first so server error positions still point into the file.
      const file = this.fileOf(m);
      const started = performance.now();
      await this.sendFile(m, file, {
        sql: `${file.sql}\n;\n${
          this.historySql(m, ELAPSED_IN_QUERY_MS, "applied")
        };\nCOMMIT`,
        offset: 0,
      });
      return performance.now() - started;
    } catch (error) {
      await this.rollbackQuietly();
      throw error;
    } finally {
      clearTimeout(watch);
    }
  }

  /**
   * Samples, from a second session, who blocks us once a step has waited
   * most of its lock_timeout: the names for the error if the lock never comes.
   */
  #watchBlockers(
    lockTimeoutMs: number,
  ): ReturnType<typeof setTimeout> | undefined {
    if (!this.options.openDiagnostics) return undefined;
    return setTimeout(() => {
      this.blockersNow().then((found) => {
        if (found.length > 0) this.#lastBlockers = found;
      }).catch(() => {});
    }, Math.max(10, lockTimeoutMs * 0.6));
  }

  /**
   * BEGIN with the step's timeouts and, in the same round trip, the check for
   * long conflicting holders; while there are some, roll back (we hold no
   * lock yet) and poll, never queueing behind them.
   */
  async #beginWhenNoLongHolders(m: Migration, targets: LockTarget[]) {
    const begin = `BEGIN; ${this.setLocalTimeouts(m)}`;
    if (targets.length === 0) {
      await this.send(begin);
      return;
    }
    const check = conflictingHoldersSql(targets, LONG_HOLDER_MS);
    await this.#pollLongHolders(m, targets, async () => {
      const rows = lastResult(await this.send(`${begin}; ${check}`));
      if (rows.length > 0) await this.rollbackQuietly();
      return rows;
    });
  }

  /** Recorded `running`, each statement alone, then recorded done. */
  async #runWithoutTransaction(
    m: Migration,
    targets: LockTarget[],
    attempt: number,
  ): Promise<number> {
    const file = this.fileOf(m);
    const statements = await statementsOf(file);
    const t = this.#timeouts(m);
    await this.#waitForLongHolders(m, targets);
    if (attempt === 1) await this.send(this.historySql(m, 0, "running"));
    const started = performance.now();
    await this.send(
      `SET lock_timeout = '${pgDuration(t.lock)}'; SET statement_timeout = '${
        pgDuration(t.statement)
      }'`,
    );
    try {
      for (const [index, statement] of statements.entries()) {
        try {
          await this.sendFile(m, file, statement);
        } catch (error) {
          // Only a first statement that cannot have left anything behind is
          // retried; CONCURRENTLY may leave an invalid index, so never those.
          const safeToRetry = index === 0 &&
            !/\bconcurrently\b/i.test(statement.sql);
          if (error instanceof RetryableLockTimeout && safeToRetry) throw error;
          if (error instanceof RetryableLockTimeout) {
            throw await this.#lockTimeoutError(m, targets, attempt, true);
          }
          throw error;
        }
      }
    } finally {
      await this.sql.unsafe("RESET lock_timeout; RESET statement_timeout")
        .catch(() => {});
    }
    const durationMs = performance.now() - started;
    await this.send(this.historySql(m, durationMs, "applied"));
    return durationMs;
  }

  /** The same wait, on its own, for no-transaction steps. */
  async #waitForLongHolders(m: Migration, targets: LockTarget[]) {
    if (targets.length === 0) return;
    const check = conflictingHoldersSql(targets, LONG_HOLDER_MS);
    await this.#pollLongHolders(m, targets, () => this.send(check));
  }

  /**
   * Runs `probe` until it finds no session that has been in its transaction
   * for more than LONG_HOLDER_MS while holding a conflicting lock on one of
   * `targets`, saying once who we wait for. Bounded by the time the retries
   * would have taken; then a LockTimeoutError naming them.
   */
  async #pollLongHolders(
    m: Migration,
    targets: LockTarget[],
    probe: () => Promise<Record<string, unknown>[]>,
  ) {
    const budget = this.#retryBudgetMs(m);
    const started = Date.now();
    let told = false;
    while (true) {
      const rows = await probe();
      if (rows.length === 0) return;
      this.#lastBlockers = rows.map(toBlockingSession);
      if (!told) {
        told = true;
        this.options.events?.onWaiting?.(m, this.#lastBlockers);
      }
      if (Date.now() - started > budget) {
        throw await this.#lockTimeoutError(m, targets, 0);
      }
      await sleep(HOLDER_POLL_MS, this.options.signal);
    }
  }

  #retryBudgetMs(m: Migration): number {
    const lock = this.#timeouts(m).lock;
    let total = lock;
    for (let a = 1; a <= this.options.lockRetries; a++) {
      total += lock + Math.min(10_000, 500 * 2 ** (a - 1));
    }
    return total;
  }

  /** Who blocks us: the sessions a second connection saw, else long conflicting holders. */
  async #sampleBlockers(targets: LockTarget[]): Promise<BlockingSession[]> {
    try {
      const found = targets.length > 0
        ? await conflictingHolders(this.sql, targets, 0)
        : [];
      if (found.length > 0) this.#lastBlockers = found;
    } catch {
      // Diagnosis is best effort; the lock timeout is the real error.
    }
    return this.#lastBlockers;
  }

  async #lockTimeoutError(
    m: Migration,
    targets: LockTarget[],
    attempts: number,
    leftRunning = false,
  ): Promise<LockTimeoutError> {
    const blockers = await this.#sampleBlockers(targets);
    const t = this.#timeouts(m);
    const who = blockers.length > 0
      ? `: blocked by ${blockers.map(describeBlocker).join("; ")}`
      : "";
    const tries = attempts === 0
      ? `waited ${
        humanDuration(this.#retryBudgetMs(m))
      } for other sessions to release their locks`
      : `lock_timeout of ${humanDuration(t.lock)} exceeded ${attempts} time${
        attempts === 1 ? "" : "s"
      }`;
    const fix = leftRunning
      ? `; it is recorded as running: check the database, then use "managed-migrate repair ${m.version}"`
      : "; end the blocking session or retry later (--lock-retries, --lock-timeout)";
    return new LockTimeoutError(
      `Cannot ${
        this.options.direction === "up" ? "apply" : "roll back"
      } migration "${m.id}": ${tries}${who}${fix}`,
      blockers,
    );
  }

  /** Turns a server error into a typed error pointing into the file. */
  #explain(
    m: Migration,
    file: { path: string; sql: string },
    offset: number,
    error: unknown,
  ): unknown {
    if (error instanceof ManagedMigrateError) return error;
    const e = error as {
      code?: string;
      message?: string;
      position?: string;
      detail?: string;
      hint?: string;
    };
    const verb = this.options.direction === "up" ? "apply" : "roll back";
    if (e.code === "57014" && this.options.signal.aborted) {
      return new InterruptedError(
        `Interrupted while running "${m.id}": its statement was cancelled and its transaction rolled back`,
        { version: m.version },
      );
    }
    if (e.code === "55P03") {
      // Remember who blocked us while they still do.
      return new RetryableLockTimeout(e.message ?? "lock timeout");
    }
    if (e.code && LOST_CONNECTION.has(e.code)) {
      return new DatabaseError(
        `Cannot ${verb} migration "${m.id}": lost the connection to the server (${e.message}): its changes and its history row commit together or not at all; run the command again once the server is back`,
        { sqlstate: e.code, file: file.path },
      );
    }
    const where = errorLocation(file.sql, offset, e.position);
    const at = where ? `${file.path}:${where.line}:${where.column}` : file.path;
    const timeout = e.code === "57014"
      ? `statement_timeout of ${
        humanDuration(this.#timeouts(m).statement)
      } exceeded`
      : e.message;
    const extra = [e.detail, e.hint ? `hint: ${e.hint}` : undefined].filter(
      Boolean,
    ).join("; ");
    return new DatabaseError(
      `Cannot ${verb} migration "${m.id}": ${timeout}${
        extra ? ` (${extra})` : ""
      } at ${at}`,
      {
        sqlstate: e.code,
        file: file.path,
        line: where?.line,
        column: where?.column,
      },
    );
  }

  /** Our backend pid, for pg_blocking_pids (cached). */
  async pid(): Promise<number> {
    if (this.#pid === undefined) {
      const [row] = await this.sql`select pg_backend_pid() as pid`;
      this.#pid = Number(row.pid);
    }
    return this.#pid;
  }

  /** Samples pg_blocking_pids(our pid) from a second session. */
  async blockersNow(): Promise<BlockingSession[]> {
    if (!this.options.openDiagnostics) return [];
    this.#diagnostics ??= await this.options.openDiagnostics();
    return blockersOf(this.#diagnostics, await this.pid());
  }
}

function tableKey(t: { schema?: string; table: string }): string {
  return `${t.schema ?? ""}.${t.table}`;
}

/**
 * A no-transaction file's statements, each to be sent alone: PostgreSQL runs
 * a multi-statement query string as one implicit transaction, where CREATE
 * INDEX CONCURRENTLY is refused.
 */
async function statementsOf(
  file: { path: string; sql: string },
): Promise<{ sql: string; offset: number }[]> {
  const { splitStatements } = await import("../guardrails/mod.ts");
  try {
    const statements = await splitStatements(file.sql);
    return statements.map((s) => ({ sql: s.text, offset: s.offset }));
  } catch (error) {
    throw new DatabaseError(
      `Cannot read "${file.path}": ${(error as Error).message}`,
      { file: file.path },
    );
  }
}

/**
 * The rows of the last statement of a multi-statement query: postgres.js
 * returns one array per statement then, but a flat array for a single one.
 */
function lastResult(
  result: readonly unknown[],
): Record<string, unknown>[] {
  const last = Array.isArray(result[0]) ? result.at(-1) : result;
  return [...(last as Record<string, unknown>[])];
}

/** A lock_timeout the runner may retry; never escapes runSteps(). */
class RetryableLockTimeout extends Error {}
