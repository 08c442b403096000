/**
 * Transaction rules (errors): statements PostgreSQL refuses to run inside a
 * transaction block. A migration runs in one unless its file starts with
 * `-- managed-migrate: no-transaction` (and has no explicit BEGIN around them).
 */

import { tableName } from "./parse.ts";
import { q, type Rule } from "./rule.ts";

/** The transaction rules of SPEC §6. */
export const TRANSACTION_RULES: Rule[] = [
  {
    id: "concurrently-in-transaction",
    family: "transactions",
    severity: "error",
    // Letting it through only moves the failure to the server, mid-run.
    allowBreaking: false,
    message:
      "CONCURRENTLY cannot run inside a transaction block: PostgreSQL would refuse this migration",
    help:
      "Move the statement to a migration of its own that starts with `-- managed-migrate: no-transaction`",
    rationale:
      'CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY wait for other transactions in several phases and so cannot run in a transaction block; PostgreSQL fails them with "cannot run inside a transaction block". A migration runs in a transaction unless it is marked no-transaction. Put one such statement per no-transaction migration: if it fails half-way it leaves an INVALID index to drop before retrying.',
    bad: "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
    good:
      "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
    check(stmt, ctx) {
      if (!ctx.inTransaction) return [];
      const where = ctx.noTransaction
        ? "inside an explicit BEGIN block"
        : "in a transactional migration (add `-- managed-migrate: no-transaction`)";
      if (stmt.kind === "create-index" && stmt.concurrent) {
        return [
          `CREATE INDEX CONCURRENTLY${
            stmt.index ? ` ${q(stmt.index)}` : ""
          } on ${q(tableName(stmt.table))} cannot run ${where}`,
        ];
      }
      if (
        stmt.kind === "drop" && stmt.objectType === "index" && stmt.concurrent
      ) {
        return [
          `DROP INDEX CONCURRENTLY ${
            stmt.objects.map((i) => q(tableName(i))).join(", ")
          } cannot run ${where}`,
        ];
      }
      if (stmt.kind === "reindex" && stmt.concurrent) {
        const target = stmt.table ? tableName(stmt.table) : stmt.name ?? "";
        return [
          `REINDEX ${stmt.target.toUpperCase()} CONCURRENTLY ${
            q(target)
          } cannot run ${where}`,
        ];
      }
      return [];
    },
  },
];
