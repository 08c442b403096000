/**
 * Breaking changes (errors): statements that destroy data or break code that
 * is still deployed. Rejected unless allowed (`allow=`, `--allow-breaking`,
 * `ALLOW_BREAKING_MIGRATIONS=true`). A table created earlier in the same file
 * is nobody else's yet, so changing it breaks nothing.
 */

import { tableName } from "./parse.ts";
import { q, type Rule } from "./rule.ts";

const RELATION_RENAMES = new Set([
  "table",
  "view",
  "matview",
  "foreign table",
]);

/** The breaking-change rules of SPEC §6. */
export const BREAKING_RULES: Rule[] = [
  {
    id: "drop-table",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message:
      "Dropping a table deletes its data and breaks code that still uses it",
    help:
      "Stop using the table in the application and deploy that first; then drop it in a later migration marked `-- managed-migrate: allow=drop-table` (and keep a backup)",
    rationale:
      "DROP TABLE cannot be undone without a restore, and every query of the running application that still names the table fails at once. Dropping is the last step of an expand/contract change, made deliberately.",
    bad: "DROP TABLE users;",
    good:
      "-- managed-migrate: allow=drop-table\n-- reviewed: no code reads legacy_users since release 4.2\nDROP TABLE legacy_users;",
    check(stmt, ctx) {
      if (stmt.kind !== "drop" || stmt.objectType !== "table") return [];
      return stmt.objects.filter((t) => !ctx.isNew(t)).map((t) =>
        `Dropping table ${
          q(tableName(t))
        } deletes its data and breaks code that still uses it`
      );
    },
  },
  {
    id: "drop-column",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message:
      "Dropping a column deletes its data and breaks code that still reads or writes it",
    help:
      "Deploy code that no longer uses the column first (tell the ORM to ignore it); then drop it in a later migration marked `-- managed-migrate: allow=drop-column`",
    rationale:
      "Running application instances still select, insert or update the column until they are redeployed; their queries fail as soon as it is gone, and the data cannot come back without a restore.",
    bad: "ALTER TABLE users DROP COLUMN legacy_flag;",
    good:
      "-- managed-migrate: allow=drop-column\n-- the application ignores users.legacy_flag since release 4.2\nALTER TABLE users DROP COLUMN legacy_flag;",
    check(stmt, ctx) {
      if (stmt.kind !== "alter-table" || ctx.isNew(stmt.table)) return [];
      return stmt.actions.flatMap((a) =>
        a.type === "drop-column"
          ? [
            `Dropping column ${q(a.column)} of ${
              q(tableName(stmt.table))
            } deletes its data and breaks code that still reads or writes it`,
          ]
          : []
      );
    },
  },
  {
    id: "rename-table",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message:
      "Renaming a table (or view, or schema) breaks every query that uses the old name",
    help:
      "Expand and contract: create the new name (for example a view over the table, or a new table kept in sync), move readers and writers to it, then drop the old name in a later migration",
    rationale:
      "Deployed code keeps using the old name until it is redeployed, so a rename is an outage for every query in flight. ALTER TABLE ... SET SCHEMA and ALTER SCHEMA ... RENAME move tables to a new qualified name and count as renames too.",
    bad: "ALTER TABLE users RENAME TO accounts;",
    good:
      "CREATE VIEW accounts AS SELECT * FROM users;\n-- later, once nothing uses users: rename in a reviewed migration",
    check(stmt, ctx) {
      if (stmt.kind === "rename") {
        if (RELATION_RENAMES.has(stmt.objectType) && !ctx.isNew(stmt.table)) {
          const what = stmt.objectType === "matview"
            ? "materialized view"
            : stmt.objectType;
          return [
            `Renaming ${what} ${q(tableName(stmt.table!))} to ${
              q(stmt.to)
            } breaks every query that uses the old name`,
          ];
        }
        if (stmt.objectType === "schema") {
          return [
            `Renaming schema ${q(stmt.from ?? "")} to ${
              q(stmt.to)
            } breaks every query that names its tables`,
          ];
        }
        return [];
      }
      if (
        stmt.kind === "set-schema" && stmt.table &&
        RELATION_RENAMES.has(stmt.objectType) && !ctx.isNew(stmt.table)
      ) {
        return [
          `Moving ${stmt.objectType} ${q(tableName(stmt.table))} to schema ${
            q(stmt.to)
          } breaks every query that uses its old name`,
        ];
      }
      return [];
    },
  },
  {
    id: "rename-column",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message: "Renaming a column breaks every query that uses the old name",
    help:
      "Add the new column, write to both, backfill in batches, move readers to the new column, then drop the old one in a later migration",
    rationale:
      "Deployed code keeps selecting and writing the old column name until it is redeployed; a rename makes those queries fail mid-deploy.",
    bad: "ALTER TABLE users RENAME COLUMN email TO email_address;",
    good:
      "ALTER TABLE users ADD COLUMN email_address text;\n-- backfill in batches, dual-write, switch readers; drop email later",
    check(stmt, ctx) {
      if (
        stmt.kind !== "rename" || stmt.objectType !== "column" ||
        ctx.isNew(stmt.table)
      ) return [];
      return [
        `Renaming column ${q(stmt.from ?? "")} of ${
          q(tableName(stmt.table!))
        } to ${q(stmt.to)} breaks every query that uses the old name`,
      ];
    },
  },
  {
    id: "change-column-type",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message:
      "Changing a column's type can rewrite the table and its indexes under an ACCESS EXCLUSIVE lock, and breaks code expecting the old type",
    help:
      "Add a column of the new type, backfill it in batches, move readers and writers to it, then drop the old column; a reviewed change known to need no rewrite (varchar(n) to text, a wider varchar) can be marked `allow=change-column-type`",
    rationale:
      "Most type changes rewrite every row and rebuild every index while holding ACCESS EXCLUSIVE, blocking reads and writes for the whole duration; the few binary-compatible ones still change what clients receive.",
    bad: "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);",
    good:
      "ALTER TABLE orders ADD COLUMN total_v2 numeric(12,2);\n-- backfill in batches, switch readers, then drop total",
    check(stmt, ctx) {
      if (stmt.kind !== "alter-table" || ctx.isNew(stmt.table)) return [];
      return stmt.actions.flatMap((a) =>
        a.type === "alter-column-type"
          ? [
            `Changing the type of column ${q(a.column)} of ${
              q(tableName(stmt.table))
            } to ${a.newType} rewrites the table under an ACCESS EXCLUSIVE lock and can break readers`,
          ]
          : []
      );
    },
  },
  {
    id: "drop-schema",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message: "Dropping a schema deletes everything in it",
    help:
      "Drop the schema's objects one by one in reviewed migrations, or mark this migration `-- managed-migrate: allow=drop-schema` once nothing uses it",
    rationale:
      "DROP SCHEMA ... CASCADE silently takes every table, view and function inside with it; without CASCADE it fails as soon as the schema is not empty.",
    bad: "DROP SCHEMA reporting CASCADE;",
    good: "-- managed-migrate: allow=drop-schema\nDROP SCHEMA reporting_old;",
    check(stmt) {
      if (stmt.kind !== "drop" || stmt.objectType !== "schema") return [];
      return stmt.objects.map((s) =>
        `Dropping schema ${q(s.name)}${
          stmt.cascade ? " with CASCADE" : ""
        } deletes everything in it`
      );
    },
  },
  {
    id: "drop-database",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message: "Dropping a database deletes all of its data",
    help:
      "Databases are not a migration's business: drop it by hand after a backup, or mark the migration `-- managed-migrate: allow=drop-database`",
    rationale:
      "DROP DATABASE removes every table and cannot run inside a transaction; it has no place in a schema migration that is replayed on every environment.",
    bad: "DROP DATABASE analytics;",
    good: "-- done by an operator, after `managed-migrate backup`",
    check(stmt) {
      if (stmt.kind !== "drop-database") return [];
      return [`Dropping database ${q(stmt.name)} deletes all of its data`];
    },
  },
  {
    id: "truncate",
    family: "breaking",
    severity: "error",
    allowBreaking: true,
    message: "TRUNCATE deletes every row and takes an ACCESS EXCLUSIVE lock",
    help:
      "Delete the rows you mean in batches with DELETE ... WHERE, or mark a reviewed migration `-- managed-migrate: allow=truncate`",
    rationale:
      "TRUNCATE empties the table (and with CASCADE its referencing tables) in one step that no running code expects, under the strongest lock.",
    bad: "TRUNCATE TABLE sessions;",
    good: "DELETE FROM sessions WHERE expires_at < now() - interval '30 days';",
    check(stmt, ctx) {
      if (stmt.kind !== "truncate") return [];
      const tables = stmt.tables.filter((t) => !ctx.isNew(t));
      if (tables.length === 0) return [];
      return [
        `Truncating ${
          tables.map((t) => q(tableName(t))).join(", ")
        } deletes every row under an ACCESS EXCLUSIVE lock`,
      ];
    },
  },
];
