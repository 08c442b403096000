/**
 * What a rule is (data plus a check, sbdchd/squawk `Rule`) and the per-file
 * context rules consult: tables this migration created, whether a statement
 * runs inside a transaction, NOT VALID constraints awaiting validation
 * (kaaveland/eugene `TransactionState`).
 */

import type { AlterAction, Statement, TableRef } from "./parse.ts";

/** How bad a finding is: errors block a run, warnings only under --strict. */
export type Severity = "error" | "warning";

/** Rule families, one source file each. */
export type Family =
  | "breaking"
  | "transactions"
  | "locking"
  | "maintenance"
  | "opaque"
  | "file";

/** One guardrail: its id, what it says, and the check over statement summaries. */
export interface Rule {
  /** SPEC §6 kebab-case id, identical in code, output and docs. */
  id: string;
  family: Family;
  severity: Severity;
  /** What happens, in general (the finding's message is specific). */
  message: string;
  /** The safe alternative. */
  help: string;
  /** Why the rule exists, for `lint --explain`. */
  rationale: string;
  /** A bad and a good example, for `lint --explain` and the README. */
  bad: string;
  good: string;
  /** False when --allow-breaking / ALLOW_BREAKING_MIGRATIONS must not let it through. */
  allowBreaking: boolean;
  /** Returns one specific message per hazard found in `stmt` (none: no finding). */
  check(stmt: Statement, ctx: FileContext): string[];
}

/** Knowledge that carries from one file to the next in one lint run (files in version order). */
export class LintSession {
  /** `table.column` keys with a validated `CHECK (column IS NOT NULL)`: SET NOT NULL needs no scan (PostgreSQL 12+). */
  readonly validatedNotNull = new Set<string>();
  /** Constraint keys of `CHECK (column IS NOT NULL)` constraints seen so far, to their column. */
  readonly notNullChecks = new Map<string, string>();
}

interface PendingConstraint {
  kind: string;
  notNullColumn?: string;
  transaction: number;
}

/** Per-file state, updated after each statement (so a statement never exempts itself). */
export class FileContext {
  /** True while the current statement runs inside a transaction block. */
  inTransaction: boolean;
  /** Identifies the transaction the current statement runs in. */
  transaction = 0;
  readonly #created: TableRef[] = [];
  readonly #indexes = new Map<string, TableRef>();
  readonly #notValid = new Map<string, PendingConstraint>();
  readonly #functions = new Map<string, string>();
  #explicitBlock = false;

  constructor(
    readonly noTransaction: boolean,
    readonly session: LintSession = new LintSession(),
  ) {
    this.inTransaction = !noTransaction;
  }

  /** True when `table` was created earlier in this file: nobody else can be using it yet. */
  isNew(table: TableRef | undefined): boolean {
    if (!table) return false;
    return this.#created.some((t) => sameTable(t, table));
  }

  /** True when the index was created earlier in this file, or belongs to a table created here. */
  isNewIndex(index: TableRef): boolean {
    return this.#indexes.has(index.name);
  }

  /** A NOT VALID constraint added earlier in this file on `table`, if any. */
  pendingConstraint(
    table: TableRef,
    name: string,
  ): PendingConstraint | undefined {
    return this.#notValid.get(constraintKey(table, name));
  }

  /** True when a CHECK (column IS NOT NULL) on the table was validated earlier. */
  hasValidatedNotNull(table: TableRef, column: string): boolean {
    return this.session.validatedNotNull.has(`${table.name}.${column}`);
  }

  /** True when the function was created earlier in this file. */
  isLocalFunction(name: string[]): boolean {
    return this.#functions.has(name[name.length - 1]);
  }

  /** Called before the rules see `stmt`: tracks transaction blocks. */
  enter(stmt: Statement): void {
    if (!this.noTransaction) return;
    if (stmt.kind === "transaction") {
      if (stmt.action === "begin" || stmt.action === "start") {
        this.#explicitBlock = true;
        this.transaction++;
      }
    } else if (!this.#explicitBlock) {
      // Outside a block, each statement of a no-transaction file commits by itself.
      this.transaction++;
    }
    this.inTransaction = this.#explicitBlock;
  }

  /** Called after the rules saw `stmt`: records what it created, renamed or validated. */
  observe(stmt: Statement): void {
    switch (stmt.kind) {
      case "create-table":
        this.#created.push(stmt.table);
        break;
      case "create-index":
        if (stmt.index) this.#indexes.set(stmt.index, stmt.table);
        break;
      case "create-function":
        this.#functions.set(
          stmt.name.split(".").pop()!,
          stmt.volatility,
        );
        break;
      case "rename":
        if (
          stmt.table && this.isNew(stmt.table) && stmt.objectType === "table"
        ) {
          this.#created.push({ schema: stmt.table.schema, name: stmt.to });
        }
        if (
          stmt.objectType === "index" && stmt.table &&
          this.isNewIndex(stmt.table)
        ) {
          this.#indexes.set(stmt.to, this.#indexes.get(stmt.table.name)!);
        }
        break;
      case "alter-table":
        for (const action of stmt.actions) {
          this.#observeAction(stmt.table, action);
        }
        break;
      case "transaction":
        if (
          this.noTransaction &&
          ["commit", "rollback", "commit prepared", "prepare"].includes(
            stmt.action,
          )
        ) {
          this.#explicitBlock = false;
          this.transaction++;
        }
        break;
    }
  }

  #observeAction(table: TableRef, action: AlterAction): void {
    if (action.type === "add-constraint" && action.name) {
      if (action.kind === "check" && action.notNullColumn) {
        this.session.notNullChecks.set(
          constraintKey(table, action.name),
          action.notNullColumn,
        );
      }
      if (action.notValid) {
        this.#notValid.set(constraintKey(table, action.name), {
          kind: action.kind,
          notNullColumn: action.notNullColumn,
          transaction: this.transaction,
        });
      }
    }
    if (
      action.type === "add-constraint" && !action.notValid &&
      action.kind === "check" && action.notNullColumn
    ) {
      this.session.validatedNotNull.add(
        `${table.name}.${action.notNullColumn}`,
      );
    }
    if (action.type === "validate-constraint") {
      const column = this.session.notNullChecks.get(
        constraintKey(table, action.name),
      );
      if (column) this.session.validatedNotNull.add(`${table.name}.${column}`);
    }
  }
}

/** Same table, where an unqualified name matches any schema. */
export function sameTable(a: TableRef, b: TableRef): boolean {
  return a.name === b.name &&
    (a.schema === undefined || b.schema === undefined || a.schema === b.schema);
}

function constraintKey(table: TableRef, name: string): string {
  return `${table.name}\u0000${name}`;
}

/** `"name"` for messages. */
export function q(name: string): string {
  return `"${name}"`;
}
