/**
 * Maintenance rules (warnings): VACUUM FULL, CLUSTER and REINDEX rebuild a
 * table or index while blocking it; they belong in a maintenance window or
 * have online alternatives, not in a deploy.
 */

import { tableName } from "./parse.ts";
import { q, type Rule } from "./rule.ts";

/** The maintenance rules of SPEC §6. */
export const MAINTENANCE_RULES: Rule[] = [
  {
    id: "vacuum-full",
    family: "maintenance",
    severity: "warning",
    allowBreaking: true,
    message:
      "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock, blocking reads and writes",
    help:
      "Use plain VACUUM (no exclusive lock), or reclaim space online with pg_repack / pg_squeeze outside the deploy",
    rationale:
      "VACUUM FULL copies the whole table and rebuilds its indexes while holding ACCESS EXCLUSIVE, so every query on the table waits for the copy; it also cannot run inside a transaction block.",
    bad: "VACUUM FULL events;",
    good: "VACUUM (ANALYZE) events;",
    check(stmt, ctx) {
      if (stmt.kind !== "vacuum" || !stmt.full) return [];
      const tables = stmt.tables.filter((t) => !ctx.isNew(t));
      if (stmt.tables.length > 0 && tables.length === 0) return [];
      const what = tables.length > 0
        ? tables.map((t) => q(tableName(t))).join(", ")
        : "every table of the database";
      return [
        `VACUUM FULL rewrites ${what} under an ACCESS EXCLUSIVE lock, blocking reads and writes`,
      ];
    },
  },
  {
    id: "cluster",
    family: "maintenance",
    severity: "warning",
    allowBreaking: true,
    message:
      "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock, blocking reads and writes",
    help:
      "Reorder rows online with pg_repack (--order-by) outside the deploy, or drop the CLUSTER",
    rationale:
      "CLUSTER copies the table in index order and rebuilds its indexes while holding ACCESS EXCLUSIVE; the order is not even maintained for later writes.",
    bad: "CLUSTER events USING events_created_at_idx;",
    good: "-- run pg_repack --order-by created_at outside the deploy",
    check(stmt, ctx) {
      if (stmt.kind !== "cluster" || ctx.isNew(stmt.table)) return [];
      const what = stmt.table
        ? q(tableName(stmt.table))
        : "every previously clustered table";
      return [
        `CLUSTER rewrites ${what} under an ACCESS EXCLUSIVE lock, blocking reads and writes`,
      ];
    },
  },
  {
    id: "reindex-blocking",
    family: "maintenance",
    severity: "warning",
    allowBreaking: true,
    message:
      "REINDEX without CONCURRENTLY blocks writes to the table (and reads that use the index) while it rebuilds",
    help:
      "Use REINDEX ... CONCURRENTLY (PostgreSQL 12+) in a migration that starts with `-- managed-migrate: no-transaction`",
    rationale:
      "A plain REINDEX takes a SHARE lock on the table and ACCESS EXCLUSIVE on the index being rebuilt, so writes stop and queries that would use the index wait until it is done.",
    bad: "REINDEX INDEX users_email_idx;",
    good:
      "-- managed-migrate: no-transaction\nREINDEX INDEX CONCURRENTLY users_email_idx;",
    check(stmt, ctx) {
      if (stmt.kind !== "reindex" || stmt.concurrent) return [];
      if (stmt.target === "table" && ctx.isNew(stmt.table)) return [];
      if (stmt.target === "index" && stmt.table && ctx.isNewIndex(stmt.table)) {
        return [];
      }
      const target = stmt.table ? tableName(stmt.table) : stmt.name ?? "";
      return [
        `REINDEX ${stmt.target.toUpperCase()}${
          target ? ` ${q(target)}` : ""
        } without CONCURRENTLY blocks writes while it rebuilds`,
      ];
    },
  },
];
