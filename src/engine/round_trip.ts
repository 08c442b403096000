/**
 * `test`: for each migration, snapshot the schema, run up, run down, check the
 * schema equals the snapshot, run up again; then the seeds.
 *
 * Two modes:
 * - `rollback` (the target database): everything happens in ONE transaction
 *   that is rolled back at the end, so the database is unchanged afterwards.
 *   A SAVEPOINT taken after each up lets the run go on from exactly the state
 *   after that up, whatever its down did (failed, or left something behind),
 *   and the "up again" check runs inside that savepoint too, so it never
 *   changes what later migrations see. `no-transaction` migrations run inside
 *   the transaction with the CONCURRENTLY keywords blanked out (found by the
 *   real parser, not by text search), which PostgreSQL then accepts.
 * - `commit` (a throwaway server): each migration is checked and committed in
 *   its own transaction, the same savepoint dance inside it. A
 *   `no-transaction` migration is first checked that way (CONCURRENTLY
 *   removed, rolled back), then run for real, statement by statement outside
 *   any transaction; when the check passed its down and up run for real too,
 *   and the real down is compared with the snapshot as well.
 *
 * Statuses in a MigrationReport:
 * - `up`: `ok`; `failed` (the run stops there); `skipped` (not run because an
 *   earlier up failed).
 * - `down`: `ok`; `failed` (it raised an error); `irreversible` (its down file
 *   says so: not run, not a failure); `skipped` (the up failed or was skipped).
 * - `roundTrip`: `ok` (schema after down equals the schema before up);
 *   `failed` (`diff` lists the difference); `skipped` (no down ran).
 * - `upAgain`: `ok`; `failed` (up does not apply after its own down);
 *   `skipped` (the round trip did not come back to the start, so a second up
 *   would only repeat that failure).
 */

import { loadParser } from "../guardrails/parse.ts";
import type { Sql } from "../db/connect.ts";
import {
  diffSnapshots,
  historyTables,
  type SchemaSnapshot,
  snapshotSchema,
} from "../db/snapshot.ts";
import { DatabaseError, InterruptedError } from "../errors.ts";
import type { Migration, Seed } from "../files/discover.ts";

/** How the run is wrapped: see the module comment. */
export type RoundTripMode = "rollback" | "commit";

/** Outcome of one migration's round trip (statuses: see the module comment). */
export interface MigrationReport {
  version: string;
  name: string;
  up: "ok" | "failed" | "skipped";
  down: "ok" | "failed" | "irreversible" | "skipped";
  roundTrip: "ok" | "failed" | "skipped";
  upAgain: "ok" | "failed" | "skipped";
  /** `- fact` present before up but missing after down, `+ fact` left behind by down. */
  diff: string[];
  /** The first error, as `file:line:column: message` when the server gave a position. */
  error?: string;
  /** What the test did differently from `migrate` (no-transaction handling, skipped statements). */
  notes: string[];
  durationMs: number;
}

/** Outcome of one seed. */
export interface SeedReport {
  name: string;
  status: "ok" | "failed" | "skipped";
  error?: string;
  durationMs: number;
}

/** Everything `test` found. `ok` is false when any up, down, round trip, up again or seed failed. */
export interface RoundTripResult {
  migrations: MigrationReport[];
  seeds: SeedReport[];
  /** Migrations applied plainly before the checks (`--from`). */
  prepared: string[];
  ok: boolean;
}

/** Options of roundTrip(). */
export interface RoundTripOptions {
  mode: RoundTripMode;
  /** Schema of the history tables, left out of snapshots. */
  historySchema: string;
  /** Applied plainly (no checks) before the tested migrations: `--from`. */
  prepare?: Migration[];
  /** Aborting cancels the running statement and rolls back. */
  signal?: AbortSignal;
  /** Called before each migration and seed runs. */
  onProgress?: (done: number, total: number, current: string) => void;
}

/** True when a migration report counts as a failure. */
export function migrationFailed(r: MigrationReport): boolean {
  return r.up === "failed" || r.down === "failed" ||
    r.roundTrip === "failed" || r.upAgain === "failed";
}

// --------------------------------------------------------------------------
// SQL preparation with the real parser

/** A file's SQL made ready to run in one way or the other. */
export interface PreparedSql {
  /** The file text, with statements that cannot run in a transaction blanked. */
  inTransaction: string;
  /** inTransaction's statements (blanked ones left out), with their offsets. */
  inTransactionStatements: { sql: string; offset: number }[];
  /** Statements to send one by one outside a transaction, with their offsets. */
  statements: { sql: string; offset: number }[];
  /** What was changed for inTransaction, with line numbers. */
  notes: string[];
}

type ParseTree = {
  stmts?: {
    stmt: Record<string, Record<string, unknown>>;
    stmt_location?: number;
    stmt_len?: number;
  }[];
};

// Statements PostgreSQL refuses inside a transaction block: skipped there.
const NON_TRANSACTIONAL = new Set([
  "CreatedbStmt",
  "DropdbStmt",
  "AlterSystemStmt",
  "CreateTableSpaceStmt",
  "DropTableSpaceStmt",
]);

// Transaction control would end the test's transaction (and commit it!).
const ENDS_TRANSACTION = new Set([
  "TRANS_STMT_BEGIN",
  "TRANS_STMT_START",
  "TRANS_STMT_COMMIT",
  "TRANS_STMT_ROLLBACK",
  "TRANS_STMT_PREPARE",
  "TRANS_STMT_COMMIT_PREPARED",
  "TRANS_STMT_ROLLBACK_PREPARED",
]);

/** Byte offset (UTF-8, as the parser reports) to UTF-16 offset in `text`. */
function byteToCharMapper(text: string): (byte: number) => number {
  const bytes = new TextEncoder().encode(text);
  const map = new Int32Array(bytes.length + 1);
  let char = 0;
  let b = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    const n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (let i = 0; i < n; i++) map[b + i] = char;
    b += n;
    char += ch.length;
  }
  map[b] = char;
  return (byte) => map[Math.max(0, Math.min(byte, bytes.length))];
}

/** 1-based line of a UTF-16 offset. */
function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) line++;
  }
  return line;
}

/** Replaces text[start, end) with spaces, keeping line breaks (so positions still map). */
function blank(chars: string[], start: number, end: number): void {
  for (let i = start; i < end; i++) {
    if (chars[i] !== "\n" && chars[i] !== "\r") chars[i] = " ";
  }
}

/** Does this statement carry a CONCURRENTLY that a transaction block refuses? */
function concurrentlyIn(
  kind: string,
  node: Record<string, unknown>,
): boolean {
  switch (kind) {
    case "IndexStmt":
    case "DropStmt":
      return node.concurrent === true;
    case "ReindexStmt":
      return JSON.stringify(node.params ?? []).includes('"concurrently"');
    case "AlterTableStmt": // DETACH PARTITION ... CONCURRENTLY
      return JSON.stringify(node.cmds ?? []).includes('"concurrent":true');
    default:
      return false;
  }
}

/**
 * Prepares a file's SQL with the real parser: splits it into statements (for
 * running outside a transaction) and, for running inside one, blanks the
 * CONCURRENTLY keyword of CREATE/DROP/REINDEX INDEX and DETACH PARTITION,
 * statements that no transaction accepts (VACUUM, CREATE DATABASE, ALTER
 * SYSTEM…) and transaction control (BEGIN/COMMIT/ROLLBACK, which would end the
 * test's transaction). Blanking keeps every character's position, so server
 * error positions still point into the file. A file the parser rejects is
 * returned unchanged: the server then reports the syntax error with its position.
 */
export async function prepareSql(text: string): Promise<PreparedSql> {
  const { parse, scan } = await loadParser();
  let tree: ParseTree;
  try {
    tree = await parse(text) as unknown as ParseTree;
  } catch {
    const whole = [{ sql: text, offset: 0 }];
    return {
      inTransaction: text,
      inTransactionStatements: whole,
      statements: whole,
      notes: [],
    };
  }
  const toChar = byteToCharMapper(text);
  const units = text.split(""); // UTF-16 code units, like toChar's offsets
  const notes: string[] = [];
  const statements: { sql: string; offset: number }[] = [];
  let tokens: {
    start: number;
    end: number;
    keywordName: string;
    text: string;
  }[] | undefined;
  const totalBytes = new TextEncoder().encode(text).length;

  for (const s of tree.stmts ?? []) {
    const startByte = s.stmt_location ?? 0;
    const endByte = s.stmt_len ? startByte + s.stmt_len : totalBytes;
    const start = toChar(startByte);
    const end = toChar(endByte);
    statements.push({ sql: text.slice(start, end), offset: start });
    const [kind, node] = Object.entries(s.stmt)[0] ?? ["", {}];
    const line = lineOf(text, start);
    if (
      NON_TRANSACTIONAL.has(kind) ||
      (kind === "VacuumStmt" && node.is_vacuumcmd === true) ||
      (kind === "ReindexStmt" &&
        /SYSTEM|DATABASE/.test(String(node.kind ?? "")))
    ) {
      blank(units, start, end);
      notes.push(
        `line ${line}: ${
          kind.replace(/Stmt$/, "")
        } skipped: it cannot run inside a transaction`,
      );
    } else if (
      kind === "TransactionStmt" && ENDS_TRANSACTION.has(String(node.kind))
    ) {
      blank(units, start, end);
      notes.push(
        `line ${line}: transaction control (${
          String(node.kind).replace("TRANS_STMT_", "")
        }) ignored inside the test transaction`,
      );
    } else if (concurrentlyIn(kind, node)) {
      tokens ??= (await scan(text)).tokens;
      for (const t of tokens) {
        if (t.start < startByte || t.end > endByte) continue;
        if (t.keywordName !== "NO_KEYWORD" && /^concurrently$/i.test(t.text)) {
          blank(units, toChar(t.start), toChar(t.end));
          notes.push(
            `line ${
              lineOf(text, toChar(t.start))
            }: CONCURRENTLY removed to run inside the test transaction`,
          );
        }
      }
    }
  }
  const inTransaction = units.join("");
  const inTransactionStatements = statements
    .map((st) => ({
      sql: inTransaction.slice(st.offset, st.offset + st.sql.length),
      offset: st.offset,
    }))
    .filter((st) => st.sql.trim() !== "");
  return { inTransaction, inTransactionStatements, statements, notes };
}

// --------------------------------------------------------------------------
// Running files

/** Length of leading whitespace and comments. */
function firstNonBlank(text: string): number {
  const match = /^(?:\s+|--[^\n]*\n?|\/\*[\s\S]*?\*\/)*/.exec(text);
  return match ? match[0].length : 0;
}

/** A server error turned into `file:line:column: message`. */
function describeError(
  error: unknown,
  file: string,
  text: string,
  offset: number,
): string {
  const e = error as {
    message?: string;
    position?: string;
    code?: string;
    where?: string;
    detail?: string;
  };
  // Server positions count characters (code points) from 1; without one,
  // point at the statement that failed.
  const pos = Number(e.position);
  let at = offset + firstNonBlank(text.slice(offset));
  if (Number.isFinite(pos) && pos >= 1) {
    at = offset +
      Array.from(text.slice(offset)).slice(0, pos - 1).join("").length;
  }
  const before = text.slice(0, at).split("\n");
  const where = `${file}:${before.length}:${
    before[before.length - 1].length + 1
  }`;
  const detail = e.detail ? ` (${e.detail})` : "";
  const context = e.where && !e.position ? ` [${e.where.split("\n")[0]}]` : "";
  return `${where}: ${e.message ?? String(error)}${detail}${context}`;
}

class Session {
  #current: { cancel(): void } | undefined;
  #onAbort = () => this.#current?.cancel();

  constructor(
    readonly conn: Sql,
    readonly historySchema: string,
    readonly signal?: AbortSignal,
  ) {
    signal?.addEventListener("abort", this.#onAbort);
  }

  dispose(): void {
    this.signal?.removeEventListener("abort", this.#onAbort);
  }

  checkInterrupt(): void {
    if (this.signal?.aborted) {
      throw new InterruptedError(
        "Interrupted: the test was stopped and its transaction rolled back",
      );
    }
  }

  /** Runs text with the simple query protocol (several statements allowed); cancellable. */
  async exec(text: string): Promise<void> {
    this.checkInterrupt();
    const query = this.conn.unsafe(text);
    this.#current = query;
    try {
      await query;
    } finally {
      this.#current = undefined;
    }
  }

  /** Snapshot with a fixed search_path, so a migration's SET search_path does not change the text of definitions. */
  async snapshot(): Promise<SchemaSnapshot> {
    this.checkInterrupt();
    const [{ path }] = await this.conn.unsafe<{ path: string }[]>(
      "select current_setting('search_path') as path, set_config('search_path', 'pg_catalog', false)",
    );
    try {
      return await snapshotSchema(this.conn, {
        excludeTables: historyTables(this.historySchema),
      });
    } finally {
      await this.conn.unsafe("select set_config('search_path', $1, false)", [
        path,
      ]);
    }
  }

  /**
   * Runs a file inside the current transaction (a savepoint protects the
   * transaction: on error it is rolled back to it). Returns the error text or
   * undefined.
   */
  async runInTransaction(
    file: string,
    text: string,
    prepared: PreparedSql,
  ): Promise<string | undefined> {
    await this.exec("savepoint mm_file");
    // Statement by statement, so an error without a server position still
    // names the statement's line.
    let offset = 0;
    try {
      for (const statement of prepared.inTransactionStatements) {
        offset = statement.offset;
        await this.exec(statement.sql);
      }
      await this.exec("release savepoint mm_file");
      return undefined;
    } catch (error) {
      this.checkInterrupt();
      await this.exec(
        "rollback to savepoint mm_file; release savepoint mm_file",
      );
      return describeError(error, file, text, offset);
    }
  }

  /** Runs a file for real: statement by statement outside a transaction when `noTransaction`, else in its own transaction. */
  async runForReal(
    file: string,
    text: string,
    prepared: PreparedSql,
    noTransaction: boolean,
  ): Promise<string | undefined> {
    if (!noTransaction) {
      await this.exec("begin");
      const error = await this.runInTransaction(file, text, prepared);
      await this.exec(error ? "rollback" : "commit");
      return error;
    }
    for (const statement of prepared.statements) {
      try {
        await this.exec(statement.sql);
      } catch (error) {
        this.checkInterrupt();
        return describeError(error, file, text, statement.offset);
      }
    }
    return undefined;
  }
}

interface PreparedMigration {
  migration: Migration;
  up: PreparedSql;
  down: PreparedSql;
}

async function prepareMigration(m: Migration): Promise<PreparedMigration> {
  return {
    migration: m,
    up: await prepareSql(m.upSql),
    down: m.down.irreversible ? emptyPrepared() : await prepareSql(m.downSql),
  };
}

function emptyPrepared(): PreparedSql {
  return {
    inTransaction: "",
    inTransactionStatements: [],
    statements: [],
    notes: [],
  };
}

function isNoTransaction(m: Migration): boolean {
  return m.up.noTransaction || m.down.noTransaction;
}

/**
 * Inside an open transaction: up → savepoint → down → snapshot → compare →
 * up again → back to the savepoint. Leaves the transaction in the state right
 * after the up (unless the up failed). `before` is the snapshot before up.
 */
async function checkInTransaction(
  s: Session,
  p: PreparedMigration,
  before: SchemaSnapshot,
  report: MigrationReport,
): Promise<void> {
  const m = p.migration;
  const upError = await s.runInTransaction(m.upPath, m.upSql, p.up);
  if (upError) {
    report.up = "failed";
    report.error = upError;
    return;
  }
  report.up = "ok";
  if (m.down.irreversible) {
    report.down = "irreversible";
    return;
  }
  await s.exec("savepoint mm_after_up");
  const downError = await s.runInTransaction(m.downPath, m.downSql, p.down);
  if (downError) {
    report.down = "failed";
    report.error = downError;
  } else {
    report.down = "ok";
    const after = await s.snapshot();
    report.diff = diffSnapshots(before, after);
    report.roundTrip = report.diff.length === 0 ? "ok" : "failed";
    if (report.roundTrip === "ok") {
      const againError = await s.runInTransaction(m.upPath, m.upSql, p.up);
      report.upAgain = againError ? "failed" : "ok";
      if (againError) report.error = `up again after down: ${againError}`;
    }
  }
  // Back to exactly the state after the first up, whatever down did.
  await s.exec(
    "rollback to savepoint mm_after_up; release savepoint mm_after_up",
  );
}

/** `commit` mode, no-transaction migration: check in a rolled-back transaction, then run for real. Returns false when the run must stop. */
async function checkForReal(
  s: Session,
  p: PreparedMigration,
  before: SchemaSnapshot,
  report: MigrationReport,
): Promise<boolean> {
  const m = p.migration;
  await s.exec("begin");
  try {
    await checkInTransaction(s, p, before, report);
  } finally {
    await s.exec("rollback");
  }
  if (report.up === "failed") return false;
  report.notes.push(
    "no-transaction: checked inside a transaction with CONCURRENTLY removed, then run for real outside one",
  );
  const upError = await s.runForReal(
    m.upPath,
    m.upSql,
    p.up,
    m.up.noTransaction,
  );
  if (upError) {
    report.up = "failed";
    report.error = `for real: ${upError}`;
    return false;
  }
  const passed = report.down === "ok" && report.roundTrip === "ok" &&
    report.upAgain === "ok";
  if (!passed) return true; // already reported; the state is "after up"
  const downError = await s.runForReal(
    m.downPath,
    m.downSql,
    p.down,
    m.down.noTransaction,
  );
  if (downError) {
    report.down = "failed";
    report.roundTrip = "skipped";
    report.upAgain = "skipped";
    report.error = `for real: ${downError}`;
    return false; // the state is neither before nor after up
  }
  report.diff = diffSnapshots(before, await s.snapshot());
  if (report.diff.length > 0) {
    report.roundTrip = "failed";
    report.upAgain = "skipped";
    report.error = "for real: the down did not restore the schema";
    return false;
  }
  const againError = await s.runForReal(
    m.upPath,
    m.upSql,
    p.up,
    m.up.noTransaction,
  );
  if (againError) {
    report.upAgain = "failed";
    report.error = `for real, up again after down: ${againError}`;
    return false;
  }
  return true;
}

function newReport(m: Migration): MigrationReport {
  return {
    version: m.version,
    name: m.name,
    up: "skipped",
    down: "skipped",
    roundTrip: "skipped",
    upAgain: "skipped",
    diff: [],
    notes: [],
    durationMs: 0,
  };
}

/**
 * Runs the round trip of every migration in order on one reserved connection,
 * then the seeds (see the module comment for the two modes and the statuses).
 * Returns the reports; throws only for interrupts, a lost connection, or a
 * `prepare` migration that fails. In `rollback` mode nothing is ever committed.
 */
export async function roundTrip(
  sql: Sql,
  migrations: Migration[],
  seeds: Seed[],
  options: RoundTripOptions,
): Promise<RoundTripResult> {
  const conn = await sql.reserve() as unknown as Sql & { release(): void };
  const s = new Session(conn, options.historySchema, options.signal);
  const rollbackMode = options.mode === "rollback";
  const result: RoundTripResult = {
    migrations: migrations.map(newReport),
    seeds: seeds.map((seed) => ({
      name: seed.name,
      status: "skipped",
      durationMs: 0,
    })),
    prepared: [],
    ok: false,
  };
  const total = migrations.length + seeds.length;
  let done = 0;
  try {
    if (rollbackMode) {
      await s.exec("begin");
      await guardTransaction(s, "start");
    }
    for (const m of options.prepare ?? []) {
      options.onProgress?.(done, total, `applying ${m.id}`);
      const p = await prepareMigration(m);
      const error = rollbackMode
        ? await s.runInTransaction(m.upPath, m.upSql, p.up)
        : await s.runForReal(m.upPath, m.upSql, p.up, m.up.noTransaction);
      if (error) {
        throw new DatabaseError(
          `Cannot apply migration "${m.id}" before the tested ones (--from): ${error}`,
          { file: m.upPath },
        );
      }
      result.prepared.push(m.id);
    }

    let stopped = false;
    for (const [i, m] of migrations.entries()) {
      options.onProgress?.(done++, total, m.id);
      const report = result.migrations[i];
      const started = performance.now();
      const p = await prepareMigration(m);
      const before = await s.snapshot();
      if (rollbackMode || !isNoTransaction(m)) {
        if (!rollbackMode) await s.exec("begin");
        await checkInTransaction(s, p, before, report);
        if (!rollbackMode) {
          await s.exec(report.up === "failed" ? "rollback" : "commit");
        }
        if (rollbackMode) {
          await guardTransaction(s, m.id);
          if (isNoTransaction(m)) {
            report.notes.push(
              "no-transaction: ran inside the test transaction with CONCURRENTLY removed",
            );
          }
        }
        stopped = report.up === "failed";
      } else {
        stopped = !(await checkForReal(s, p, before, report));
      }
      report.notes.push(...p.up.notes.map((n) => `${m.upPath} ${n}`));
      report.notes.push(...p.down.notes.map((n) => `${m.downPath} ${n}`));
      report.durationMs = Math.round(performance.now() - started);
      if (stopped) break;
    }

    if (!stopped) {
      for (const [i, seed] of seeds.entries()) {
        options.onProgress?.(done++, total, `seed ${seed.name}`);
        const started = performance.now();
        const prepared = await prepareSql(seed.sql);
        const error = rollbackMode
          ? await s.runInTransaction(seed.path, seed.sql, prepared)
          : await s.runForReal(seed.path, seed.sql, prepared, false);
        result.seeds[i].status = error ? "failed" : "ok";
        if (error) result.seeds[i].error = error;
        result.seeds[i].durationMs = Math.round(performance.now() - started);
      }
      if (rollbackMode) await guardTransaction(s, "the seeds");
    }
    result.ok = !result.migrations.some(migrationFailed) &&
      !result.seeds.some((r) => r.status === "failed") &&
      !result.migrations.some((r) => r.up === "skipped");
    return result;
  } finally {
    s.dispose();
    // In rollback mode this is THE rollback; in commit mode a no-op unless a
    // check was cut short. A broken connection rolls back on the server anyway.
    await conn.unsafe("rollback").catch(() => {});
    conn.release();
  }
}

const xids = new WeakMap<Session, string>();

/**
 * Proves the test's transaction is still the one it began: a COMMIT that got
 * past the parser would have made changes permanent, and the run must say so
 * rather than go on.
 */
async function guardTransaction(s: Session, after: string): Promise<void> {
  const [{ xid }] = await s.conn.unsafe<{ xid: string }[]>(
    "select txid_current()::text as xid",
  );
  const first = xids.get(s);
  if (first === undefined) {
    xids.set(s, xid);
  } else if (first !== xid) {
    throw new DatabaseError(
      `The test transaction ended inside ${after}: its changes may have been committed to the database; check the file for COMMIT or ROLLBACK`,
    );
  }
}
