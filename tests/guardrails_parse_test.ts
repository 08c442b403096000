/** parseSql(): positions over UTF-8 text, syntax errors, and what never fires (comments, strings, dollar quotes). */
import assert from "node:assert/strict";
import { parseSql } from "../src/guardrails/parse.ts";
import {
  checkMigrations,
  lintSql,
  lockedTables,
  RULES,
  splitStatements,
} from "../src/guardrails/mod.ts";
import type { Migration } from "../src/files/discover.ts";

const OFF = { allowBreaking: false, strict: false };

Deno.test("parseSql() gives the first token's line and column after multi-byte text", async () => {
  const sql =
    "-- Überarbeitung: naïve café ☕ 😀\nSELECT 'ü😀';  /* é */ DROP TABLE t;\n  INSERT INTO t VALUES ('日本語'); DROP TABLE u;";
  const result = await parseSql(sql);
  assert.ok(result.ok);
  assert.deepEqual(
    result.statements.map((s) => [s.kind, s.line, s.column]),
    [["select", 2, 1], ["drop", 2, 23], ["dml", 3, 3], ["drop", 3, 33]],
  );
  const findings = await lintSql(sql, "m.up.sql", OFF);
  assert.deepEqual(findings.map((f) => [f.rule, f.line, f.column]), [
    ["drop-table", 2, 23],
    ["drop-table", 3, 33],
  ]);
});

Deno.test("lintSql() reports a syntax error with its line and column, never allowed", async () => {
  const cases: [string, number, number][] = [
    ["SELECT 1;\n  ALTER TABLE t ADD COLUMN x int DEFALT 0;", 2, 34],
    ["SELECT 'é😀';\nCREAT TABLE t ();", 2, 1],
    ["SELECT 1;\nSELECT 'unterminated", 2, 8],
    ["\\connect other\nSELECT 1;", 1, 1],
  ];
  for (const [sql, line, column] of cases) {
    const got = await lintSql(
      `-- managed-migrate: allow=syntax-error\n${sql}`,
      "m.up.sql",
      { allowBreaking: true, strict: false },
    );
    assert.equal(got.length, 1, sql);
    assert.equal(got[0].rule, "syntax-error");
    assert.equal(got[0].severity, "error");
    assert.equal(got[0].allowed, false);
    assert.deepEqual([got[0].line, got[0].column], [line + 1, column], sql);
  }
});

Deno.test("lintSql() never fires on comments, string literals or dollar-quoted bodies", async () => {
  const sql = `-- DROP TABLE users; ALTER TABLE t DROP COLUMN c;
/* TRUNCATE orders; /* nested: VACUUM FULL t; */ CREATE INDEX i ON t (a); */
SELECT 'DROP TABLE users', E'ALTER TABLE t RENAME TO u\\'', $$DROP SCHEMA app CASCADE$$;
INSERT INTO notes (body) VALUES ($tag$ ALTER TABLE t ALTER c TYPE bigint; $tag$);
COMMENT ON TABLE t IS 'DROP DATABASE prod';
`;
  assert.deepEqual(await lintSql(sql, "m.up.sql", OFF), []);
});

Deno.test("lintSql() reports empty-migration for an empty or comment-only file", async () => {
  for (const sql of ["", "-- TODO\n", "/* placeholder */ ;\n;"]) {
    const got = await lintSql(sql, "m.up.sql", OFF);
    assert.deepEqual(got.map((f) => [f.rule, f.severity, f.line, f.column]), [
      ["empty-migration", "warning", 1, 1],
    ]);
  }
  assert.deepEqual(await lintSql("SELECT 1;", "m.up.sql", OFF), []);
});

Deno.test("checkMigrations() lints up SQL with each migration's directives", async () => {
  const migration = (
    version: string,
    upSql: string,
    noTransaction: boolean,
    allow: string[],
  ) =>
    ({
      version,
      name: "m",
      id: `${version}_m`,
      upPath: `db/managed-migrations/${version}_m.up.sql`,
      downPath: `db/managed-migrations/${version}_m.down.sql`,
      upSql,
      downSql: "DROP TABLE everything;",
      checksum: "",
      up: { noTransaction, irreversible: false, allow },
      down: { noTransaction: false, irreversible: false, allow: [] },
    }) satisfies Migration;
  const got = await checkMigrations([
    migration("1", "CREATE INDEX CONCURRENTLY i ON t (a);", true, []),
    migration("2", "ALTER TABLE t DROP COLUMN c;", false, ["drop-column"]),
    migration("3", "CREATE INDEX CONCURRENTLY j ON t (a);", false, []),
  ], OFF);
  assert.deepEqual(got.map((f) => [f.file, f.rule, f.allowed]), [
    ["db/managed-migrations/2_m.up.sql", "drop-column", true],
    ["db/managed-migrations/3_m.up.sql", "concurrently-in-transaction", false],
  ]);
});

Deno.test("lockedTables() lists the tables a migration locks, with the strongest mode", async () => {
  const got = await lockedTables(`CREATE TABLE fresh (id int);
ALTER TABLE fresh ADD COLUMN a int;
CREATE INDEX CONCURRENTLY i ON app."Users" (email);
ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT fk;
UPDATE accounts SET flag = true;
LOCK TABLE accounts IN SHARE MODE;`);
  assert.deepEqual(got, [
    { schema: "app", table: "Users", mode: "ShareUpdateExclusiveLock" },
    { table: "orders", mode: "AccessExclusiveLock" },
    { table: "users", mode: "ShareRowExclusiveLock" },
    { table: "accounts", mode: "ShareLock" },
  ]);
});

Deno.test("splitStatements() returns each statement's text and position", async () => {
  const got = await splitStatements(
    "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\n  DROP INDEX CONCURRENTLY j;",
  );
  assert.deepEqual(got, [
    {
      text: "CREATE INDEX CONCURRENTLY i ON t (a)",
      line: 2,
      column: 1,
      offset: 35,
    },
    { text: "DROP INDEX CONCURRENTLY j", line: 4, column: 3, offset: 76 },
  ]);
});

Deno.test("RULES lists every SPEC §6 rule id once, each with help and examples", () => {
  const ids = RULES.map((r) => r.id);
  assert.deepEqual(ids.sort(), [
    "add-check-validating",
    "add-column-volatile-default",
    "add-foreign-key-validating",
    "add-primary-key",
    "add-unique-constraint",
    "change-column-type",
    "cluster",
    "concurrently-in-transaction",
    "create-index-blocking",
    "drop-column",
    "drop-database",
    "drop-index-blocking",
    "drop-schema",
    "drop-table",
    "dynamic-sql",
    "empty-migration",
    "reindex-blocking",
    "rename-column",
    "rename-table",
    "set-not-null",
    "syntax-error",
    "truncate",
    "vacuum-full",
  ]);
  for (const r of RULES) {
    assert.ok(r.help && r.rationale && r.bad && r.good, r.id);
  }
});
