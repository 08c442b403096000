/**
 * Locking hazards (warnings; errors under --strict): statements that hold a
 * lock blocking reads or writes while they scan, rewrite or index a table
 * that is already in use. Tables created earlier in the same file are exempt.
 */

import { type AlterAction, type Statement, tableName } from "./parse.ts";
import { type FileContext, q, type Rule } from "./rule.ts";

type AlterStatement = Extract<Statement, { kind: "alter-table" }>;

/** Runs `pick` over each subcommand of an ALTER TABLE on a table not created in this file. */
function eachAction(
  stmt: Statement,
  ctx: FileContext,
  pick: (
    action: AlterAction,
    table: string,
    stmt: AlterStatement,
  ) => string | undefined,
): string[] {
  if (stmt.kind !== "alter-table" || ctx.isNew(stmt.table)) return [];
  const table = q(tableName(stmt.table));
  const out: string[] = [];
  for (const action of stmt.actions) {
    const message = pick(action, table, stmt);
    if (message) out.push(message);
  }
  return out;
}

/** A VALIDATE CONSTRAINT whose NOT VALID ADD ran in the same transaction, earlier in this file. */
function validatedInSameTransaction(
  action: AlterAction,
  stmt: AlterStatement,
  ctx: FileContext,
  kind: string,
): boolean {
  if (action.type !== "validate-constraint" || !ctx.inTransaction) {
    return false;
  }
  const pending = ctx.pendingConstraint(stmt.table, action.name);
  return pending?.kind === kind && pending.transaction === ctx.transaction;
}

const SAME_TRANSACTION =
  "in the same transaction as its NOT VALID ADD, so the ADD's lock is held through the validation scan";

/** The locking-hazard rules of SPEC §6. */
export const LOCKING_RULES: Rule[] = [
  {
    id: "create-index-blocking",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "CREATE INDEX without CONCURRENTLY blocks writes to the table while the index builds",
    help:
      "Use CREATE INDEX CONCURRENTLY in a migration of its own that starts with `-- managed-migrate: no-transaction`",
    rationale:
      "A plain CREATE INDEX holds a SHARE lock for the whole build: inserts, updates and deletes wait, for minutes on a big table. CONCURRENTLY builds without blocking writes (it cannot run in a transaction). Indexes on a table created in the same migration are fine, and so is CREATE INDEX ON ONLY a partitioned parent (the online recipe for partitions).",
    bad: "CREATE INDEX users_email_idx ON users (email);",
    good:
      "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
    check(stmt, ctx) {
      if (
        stmt.kind !== "create-index" || stmt.concurrent || stmt.only ||
        ctx.isNew(stmt.table)
      ) return [];
      return [
        `Creating ${stmt.unique ? "unique " : ""}index${
          stmt.index ? ` ${q(stmt.index)}` : ""
        } on ${
          q(tableName(stmt.table))
        } without CONCURRENTLY blocks writes while it builds`,
      ];
    },
  },
  {
    id: "drop-index-blocking",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
    help:
      "Use DROP INDEX CONCURRENTLY in a migration of its own that starts with `-- managed-migrate: no-transaction`",
    rationale:
      "A plain DROP INDEX locks the index's table in ACCESS EXCLUSIVE mode; it waits behind every running query on the table and blocks every new one while it waits.",
    bad: "DROP INDEX users_email_idx;",
    good:
      "-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_email_idx;",
    check(stmt, ctx) {
      if (
        stmt.kind !== "drop" || stmt.objectType !== "index" || stmt.concurrent
      ) return [];
      const indexes = stmt.objects.filter((i) => !ctx.isNewIndex(i));
      if (indexes.length === 0) return [];
      return [
        `Dropping index ${
          indexes.map((i) => q(tableName(i))).join(", ")
        } without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table`,
      ];
    },
  },
  {
    id: "add-foreign-key-validating",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "Adding a foreign key without NOT VALID scans the table while blocking writes to it and to the referenced table",
    help:
      "Add the constraint with NOT VALID, then run ALTER TABLE ... VALIDATE CONSTRAINT in a later migration (or a no-transaction one): validation takes only a SHARE UPDATE EXCLUSIVE lock",
    rationale:
      "ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE on both tables and checks every existing row before committing, so writes wait for the whole scan. NOT VALID skips the scan; VALIDATE CONSTRAINT later checks the rows without blocking writes. In one transaction the pair gains nothing: the ADD's lock is held through the scan. A new column with REFERENCES and no default needs no scan.",
    bad:
      "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);",
    good:
      "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n-- next migration:\nALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;",
    check(stmt, ctx) {
      return eachAction(stmt, ctx, (a, table, alter) => {
        if (a.type === "add-constraint" && a.kind === "foreign-key") {
          if (a.notValid) return undefined;
          return `Adding foreign key${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} validates every row while blocking writes; add it NOT VALID and validate it separately`;
        }
        if (a.type === "add-column" && a.validatingReference) {
          return `Adding column ${
            q(a.column)
          } to ${table} with REFERENCES and a default checks every row while blocking writes`;
        }
        if (validatedInSameTransaction(a, alter, ctx, "foreign-key")) {
          return `Validating foreign key ${
            q((a as { name: string }).name)
          } on ${table} ${SAME_TRANSACTION}`;
        }
        return undefined;
      });
    },
  },
  {
    id: "add-check-validating",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "Adding a CHECK constraint without NOT VALID scans the whole table under an ACCESS EXCLUSIVE lock",
    help:
      "Add the constraint with NOT VALID, then run ALTER TABLE ... VALIDATE CONSTRAINT in a later migration (or a no-transaction one): validation takes only a SHARE UPDATE EXCLUSIVE lock",
    rationale:
      "ADD CONSTRAINT ... CHECK locks the table in ACCESS EXCLUSIVE mode and reads every row to prove the condition, so all queries wait for the scan. An inline CHECK on ADD COLUMN scans the same way. NOT VALID only enforces the check for new rows; a separate VALIDATE CONSTRAINT checks old rows without blocking. In one transaction the ADD's lock is held through the VALIDATE scan.",
    bad:
      "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0);",
    good:
      "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;\n-- next migration:\nALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;",
    check(stmt, ctx) {
      return eachAction(stmt, ctx, (a, table, alter) => {
        if (a.type === "add-constraint" && a.kind === "check") {
          if (a.notValid) return undefined;
          return `Adding check constraint${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} scans every row under an ACCESS EXCLUSIVE lock; add it NOT VALID and validate it separately`;
        }
        if (a.type === "add-column" && a.inlineCheck) {
          return `Adding column ${
            q(a.column)
          } to ${table} with an inline CHECK scans every row under an ACCESS EXCLUSIVE lock`;
        }
        if (validatedInSameTransaction(a, alter, ctx, "check")) {
          return `Validating check constraint ${
            q((a as { name: string }).name)
          } on ${table} ${SAME_TRANSACTION}`;
        }
        return undefined;
      });
    },
  },
  {
    id: "set-not-null",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
    help:
      "Add CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a separate migration, then SET NOT NULL (PostgreSQL 12+ skips the scan thanks to the valid check) and drop the check",
    rationale:
      "ALTER COLUMN ... SET NOT NULL holds ACCESS EXCLUSIVE while it reads every row looking for a NULL. From PostgreSQL 12 on, a valid CHECK (column IS NOT NULL) constraint proves it instead, so the online recipe is: add the check NOT VALID, validate it separately (SHARE UPDATE EXCLUSIVE), then SET NOT NULL without a scan.",
    bad: "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
    good:
      "ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID;\n-- next migration:\nALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;\n-- next migration:\nALTER TABLE users ALTER COLUMN email SET NOT NULL;\nALTER TABLE users DROP CONSTRAINT users_email_not_null;",
    check(stmt, ctx) {
      return eachAction(stmt, ctx, (a, table, alter) => {
        if (a.type === "set-not-null") {
          if (ctx.hasValidatedNotNull(alter.table, a.column)) return undefined;
          return `Setting column ${
            q(a.column)
          } of ${table} NOT NULL scans every row under an ACCESS EXCLUSIVE lock`;
        }
        if (
          a.type === "add-constraint" && a.kind === "not-null" && !a.notValid
        ) {
          return `Adding NOT NULL constraint${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} scans every row under an ACCESS EXCLUSIVE lock`;
        }
        if (validatedInSameTransaction(a, alter, ctx, "not-null")) {
          return `Validating NOT NULL constraint ${
            q((a as { name: string }).name)
          } on ${table} ${SAME_TRANSACTION}`;
        }
        return undefined;
      });
    },
  },
  {
    id: "add-column-volatile-default",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "Adding a column with a volatile default, serial, identity or stored generated value rewrites the whole table under an ACCESS EXCLUSIVE lock",
    help:
      "Add the column without a default (or with a constant one), set the default afterwards with ALTER COLUMN ... SET DEFAULT, and backfill existing rows in batches",
    rationale:
      "Since PostgreSQL 11 a constant or stable default (0, 'x', now(), CURRENT_DATE) is stored in the catalog and ADD COLUMN is instant. A volatile default (random(), gen_random_uuid(), clock_timestamp(), nextval()), a serial or identity column, or a GENERATED ... STORED column must compute a value per row, so the table and its indexes are rewritten while every query waits.",
    bad:
      "ALTER TABLE users ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();",
    good:
      "ALTER TABLE users ADD COLUMN public_id uuid;\nALTER TABLE users ALTER COLUMN public_id SET DEFAULT gen_random_uuid();\n-- backfill existing rows in batches",
    check(stmt, ctx) {
      return eachAction(
        stmt,
        ctx,
        (a, table) =>
          a.type === "add-column" && a.rewrite
            ? `Adding column ${
              q(a.column)
            } to ${table} rewrites the table under an ACCESS EXCLUSIVE lock: ${a.rewrite}`
            : undefined,
      );
    },
  },
  {
    id: "add-unique-constraint",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "Adding a UNIQUE (or EXCLUDE) constraint builds its index under an ACCESS EXCLUSIVE lock",
    help:
      "Build the index first with CREATE UNIQUE INDEX CONCURRENTLY (no-transaction migration), then ALTER TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX",
    rationale:
      "ADD CONSTRAINT ... UNIQUE creates its index while holding ACCESS EXCLUSIVE, blocking reads and writes for the whole build. Building the index concurrently and attaching it with USING INDEX only takes the lock for a catalog update.",
    bad: "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
    good:
      "-- managed-migrate: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);\n-- next migration:\nALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
    check(stmt, ctx) {
      return eachAction(stmt, ctx, (a, table) => {
        if (
          a.type === "add-constraint" && a.kind === "unique" && !a.usingIndex
        ) {
          return `Adding unique constraint${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} builds its index under an ACCESS EXCLUSIVE lock`;
        }
        if (a.type === "add-constraint" && a.kind === "exclusion") {
          return `Adding exclusion constraint${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} builds its index under an ACCESS EXCLUSIVE lock`;
        }
        if (a.type === "add-column" && a.inlineUnique) {
          return `Adding column ${
            q(a.column)
          } to ${table} with UNIQUE builds an index under an ACCESS EXCLUSIVE lock`;
        }
        return undefined;
      });
    },
  },
  {
    id: "add-primary-key",
    family: "locking",
    severity: "warning",
    allowBreaking: true,
    message:
      "Adding a primary key builds its index (and checks NOT NULL) under an ACCESS EXCLUSIVE lock",
    help:
      "Build the index first with CREATE UNIQUE INDEX CONCURRENTLY (no-transaction migration), then ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY USING INDEX",
    rationale:
      "ADD PRIMARY KEY creates a unique index while holding ACCESS EXCLUSIVE and sets its columns NOT NULL, scanning the table; reads and writes wait for the whole build. Building the index concurrently and attaching it with USING INDEX keeps the lock short.",
    bad: "ALTER TABLE events ADD PRIMARY KEY (id);",
    good:
      "-- managed-migrate: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY events_pkey ON events (id);\n-- next migration:\nALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_pkey;",
    check(stmt, ctx) {
      return eachAction(stmt, ctx, (a, table) => {
        if (
          a.type === "add-constraint" && a.kind === "primary-key" &&
          !a.usingIndex
        ) {
          return `Adding primary key${
            a.name ? ` ${q(a.name)}` : ""
          } on ${table} builds its index under an ACCESS EXCLUSIVE lock`;
        }
        if (a.type === "add-column" && a.inlinePrimaryKey) {
          return `Adding column ${
            q(a.column)
          } to ${table} as PRIMARY KEY builds an index under an ACCESS EXCLUSIVE lock`;
        }
        return undefined;
      });
    },
  },
];
