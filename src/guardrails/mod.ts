/**
 * Guardrails: the rule registry, linting of migrations and files, and which
 * findings block a run (SPEC §6). Parses with the real PostgreSQL parser; no
 * I/O beyond loading it.
 */

import { LOCK_MODES } from "../db/lock_modes.ts";
import type { Migration } from "../files/discover.ts";
import { type Directives, parseDirectives } from "../files/directives.ts";
import { BREAKING_RULES } from "./breaking.ts";
import { LOCKING_RULES } from "./locking.ts";
import { MAINTENANCE_RULES } from "./maintenance.ts";
import { OPAQUE_RULES } from "./opaque.ts";
import {
  loadCatalog,
  parseSql,
  type Statement,
  type TableRef,
} from "./parse.ts";
import { FileContext, LintSession, type Rule, sameTable } from "./rule.ts";
import { TRANSACTION_RULES } from "./transactions.ts";

export type { Family, Rule, Severity } from "./rule.ts";
import type { Severity } from "./rule.ts";

/** One guardrail finding, as printed by `lint` and refused by `migrate`. */
export interface Finding {
  rule: string;
  severity: Severity;
  file: string;
  line: number;
  column: number;
  message: string;
  help: string;
  /** An error-level finding let through by --allow-breaking, the env or an allow= directive (reported, not hidden). */
  allowed: boolean;
}

/** How strict a run is. */
export interface GuardrailOptions {
  /** --allow-breaking or ALLOW_BREAKING_MIGRATIONS=true: breaking errors are allowed. */
  allowBreaking: boolean;
  /** --strict: warnings block too. */
  strict: boolean;
}

/** One file to lint: its SQL, the name to report, and its directives (parsed from the SQL when absent). */
export interface LintInput {
  sql: string;
  file: string;
  directives?: Directives;
}

const FILE_RULES: Rule[] = [
  {
    id: "empty-migration",
    family: "file",
    severity: "warning",
    allowBreaking: true,
    message: "The up migration is empty: it changes nothing",
    help:
      "Write the migration's SQL, or delete the placeholder pair if it is not needed",
    rationale:
      "An empty or comment-only up file is a valid no-op, but usually a forgotten placeholder from `managed-migrate new`; once applied, its version is recorded and editing it later counts as drift.",
    bad: "-- TODO: add the index",
    good:
      "CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
    check: () => [],
  },
  {
    id: "syntax-error",
    family: "file",
    severity: "error",
    allowBreaking: false,
    message: "PostgreSQL cannot parse this SQL",
    help:
      "Fix the statement at the position shown; `psql` meta-commands such as \\connect or \\set are not SQL",
    rationale:
      "A migration the server cannot parse fails half-way through a deploy; it is refused before anything runs. No directive or flag lets it through.",
    bad: "ALTER TABLE users ADD COLUMN email text DEFALT '';",
    good: "ALTER TABLE users ADD COLUMN email text DEFAULT '';",
    check: () => [],
  },
];

/** Every rule, in the order of SPEC §6, then the file-level ones. */
export const RULES: readonly Rule[] = [
  ...BREAKING_RULES,
  ...TRANSACTION_RULES,
  ...LOCKING_RULES,
  ...MAINTENANCE_RULES,
  ...OPAQUE_RULES,
  ...FILE_RULES,
];

/** Looks a rule up by id. */
export function findRule(id: string): Rule | undefined {
  return RULES.find((r) => r.id === id);
}

const STATEMENT_RULES = RULES.filter((r) => r.family !== "file");

/**
 * Lints files in order with one shared session (a CHECK validated in an
 * earlier file makes a later SET NOT NULL safe). Findings are in file order,
 * then by position.
 */
export async function lintFiles(
  inputs: LintInput[],
  options: GuardrailOptions,
): Promise<Finding[]> {
  await loadCatalog();
  const session = new LintSession();
  const findings: Finding[] = [];
  for (const input of inputs) {
    findings.push(...await lintOne(input, options, session));
  }
  return findings;
}

async function lintOne(
  input: LintInput,
  options: GuardrailOptions,
  session: LintSession,
): Promise<Finding[]> {
  const directives = input.directives ?? parseDirectives(input.sql).directives;
  const allowedIds = new Set(directives.allow);
  const make = (
    rule: Rule,
    at: { line: number; column: number },
    message: string,
  ): Finding => ({
    rule: rule.id,
    severity: rule.severity,
    file: input.file,
    line: at.line,
    column: at.column,
    message,
    help: rule.help,
    allowed: rule.id !== "syntax-error" &&
      (allowedIds.has(rule.id) ||
        (options.allowBreaking && rule.severity === "error" &&
          rule.allowBreaking)),
  });

  const parsed = await parseSql(input.sql);
  if (!parsed.ok) {
    return [
      make(
        findRule("syntax-error")!,
        parsed.error,
        parsed.error.message.charAt(0).toUpperCase() +
          parsed.error.message.slice(1),
      ),
    ];
  }
  if (parsed.statements.length === 0) {
    return [
      make(
        findRule("empty-migration")!,
        { line: 1, column: 1 },
        FILE_RULES[0].message,
      ),
    ];
  }
  const ctx = new FileContext(directives.noTransaction, session);
  const findings: Finding[] = [];
  for (const stmt of parsed.statements) {
    ctx.enter(stmt);
    for (const rule of STATEMENT_RULES) {
      for (const message of rule.check(stmt, ctx)) {
        findings.push(make(rule, stmt, message));
      }
    }
    ctx.observe(stmt);
  }
  return findings;
}

/** Lints the up SQL of each migration (uses migration.up directives: noTransaction, allow). */
export function checkMigrations(
  migrations: Migration[],
  options: GuardrailOptions,
): Promise<Finding[]> {
  return lintFiles(
    migrations.map((m) => ({ sql: m.upSql, file: m.upPath, directives: m.up })),
    options,
  );
}

/** Lints one file's SQL (used by `lint PATH`). */
export function lintSql(
  sql: string,
  file: string,
  options: GuardrailOptions,
): Promise<Finding[]> {
  return lintFiles([{ sql, file }], options);
}

/** Findings that must stop a run: errors not allowed, plus warnings under strict. */
export function blockingFindings(
  findings: Finding[],
  strict: boolean,
): Finding[] {
  return findings.filter((f) =>
    !f.allowed && (f.severity === "error" || strict)
  );
}

/** A lock a statement takes on a table, named as in pg_locks.mode. */
export interface LockedTable {
  schema?: string;
  table: string;
  mode: string;
}

/** Tables (schema-qualified when written so) that a migration's statements lock, for the lock-wait logic. */
export async function lockedTables(sql: string): Promise<LockedTable[]> {
  const parsed = await parseSql(sql);
  if (!parsed.ok) return [];
  const created: TableRef[] = [];
  const out: LockedTable[] = [];
  const add = (ref: TableRef | undefined, mode: string) => {
    if (!ref || created.some((c) => sameTable(c, ref))) return;
    const existing = out.find((o) =>
      o.table === ref.name && o.schema === ref.schema
    );
    if (!existing) {
      out.push({
        ...(ref.schema ? { schema: ref.schema } : {}),
        table: ref.name,
        mode,
      });
    } else if (
      LOCK_STRENGTH.indexOf(mode) > LOCK_STRENGTH.indexOf(existing.mode)
    ) {
      existing.mode = mode;
    }
  };
  for (const stmt of parsed.statements) {
    for (const [ref, mode] of locksOf(stmt)) add(ref, mode);
    if (stmt.kind === "create-table") created.push(stmt.table);
  }
  return out;
}

/** Tables a file creates (CREATE TABLE), as written: the runner skips its lock check for them later in the same run. */
export async function createdTables(
  sql: string,
): Promise<{ schema?: string; table: string }[]> {
  const parsed = await parseSql(sql);
  if (!parsed.ok) return [];
  return parsed.statements.flatMap((stmt) =>
    stmt.kind === "create-table"
      ? [{
        ...(stmt.table.schema ? { schema: stmt.table.schema } : {}),
        table: stmt.table.name,
      }]
      : []
  );
}

const LOCK_STRENGTH = LOCK_MODES;

const LIGHT_ALTERS = new Set([
  "validate-constraint",
]);

function locksOf(stmt: Statement): [TableRef | undefined, string][] {
  const X = "AccessExclusiveLock";
  switch (stmt.kind) {
    case "create-table":
      return stmt.partitionOf ? [[stmt.partitionOf, X]] : [];
    case "alter-table": {
      if (stmt.objectType !== "table" && stmt.objectType !== "foreign table") {
        return [];
      }
      const light = stmt.actions.every((a) => LIGHT_ALTERS.has(a.type));
      const locks: [TableRef | undefined, string][] = [[
        stmt.table,
        light ? "ShareUpdateExclusiveLock" : X,
      ]];
      for (const a of stmt.actions) {
        if (a.type === "add-constraint" && a.references) {
          locks.push([a.references, "ShareRowExclusiveLock"]);
        }
        if (a.type === "add-column") {
          for (const r of a.references) {
            locks.push([r, "ShareRowExclusiveLock"]);
          }
        }
      }
      return locks;
    }
    case "create-index":
      return [[
        stmt.table,
        stmt.concurrent ? "ShareUpdateExclusiveLock" : "ShareLock",
      ]];
    case "drop":
      return stmt.objectType === "table"
        ? stmt.objects.map((t) => [t, X] as [TableRef, string])
        : [];
    case "rename":
    case "set-schema":
      return stmt.table && stmt.objectType !== "index" ? [[stmt.table, X]] : [];
    case "truncate":
      return stmt.tables.map((t) => [t, X] as [TableRef, string]);
    case "reindex":
      return stmt.target === "table"
        ? [[
          stmt.table,
          stmt.concurrent ? "ShareUpdateExclusiveLock" : "ShareLock",
        ]]
        : [];
    case "vacuum":
      return stmt.tables.map((t) =>
        [t, stmt.full ? X : "ShareUpdateExclusiveLock"] as [TableRef, string]
      );
    case "cluster":
      return [[stmt.table, X]];
    case "dml":
      return [[stmt.table, "RowExclusiveLock"]];
    case "lock":
      return stmt.tables.map((t) => [t, stmt.mode] as [TableRef, string]);
    default:
      return [];
  }
}

/** The statements of a file with their positions (for running a no-transaction file one statement at a time). */
export async function splitStatements(
  sql: string,
): Promise<{ text: string; line: number; column: number; offset: number }[]> {
  const parsed = await parseSql(sql);
  if (!parsed.ok) {
    throw new SyntaxError(
      `${parsed.error.message} at line ${parsed.error.line}, column ${parsed.error.column}`,
    );
  }
  return parsed.statements.map(({ text, line, column, offset }) => ({
    text,
    line,
    column,
    offset,
  }));
}
