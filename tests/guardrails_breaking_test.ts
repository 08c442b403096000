/** Breaking-change rules (errors) of SPEC §6, on the real PostgreSQL parser. */
import assert from "node:assert/strict";
import {
  blockingFindings,
  type Finding,
  lintSql,
} from "../src/guardrails/mod.ts";

const OFF = { allowBreaking: false, strict: false };

async function findings(
  sql: string,
  rule: string,
  options = OFF,
): Promise<Finding[]> {
  return (await lintSql(sql, "m.up.sql", options)).filter((f) =>
    f.rule === rule
  );
}

interface Case {
  rule: string;
  fires: { sql: string; at: [number, number][] }[];
  passes: string[];
}

const CASES: Case[] = [
  {
    rule: "drop-table",
    fires: [
      { sql: "DROP TABLE users;", at: [[1, 1]] },
      {
        sql:
          '-- legacy cleanup\n  DROP TABLE IF EXISTS public."Legacy", audit CASCADE;',
        at: [[2, 3], [2, 3]],
      },
      { sql: "CREATE TABLE a (id int);\nDROP TABLE a, b;", at: [[2, 1]] },
    ],
    passes: [
      "CREATE TABLE tmp (id int);\nDROP TABLE tmp;",
      "DROP VIEW users_view;",
      "SELECT 'DROP TABLE users';",
      "-- DROP TABLE users;\n/* DROP TABLE users; */ SELECT 1;",
    ],
  },
  {
    rule: "drop-column",
    fires: [
      { sql: "ALTER TABLE users DROP COLUMN email;", at: [[1, 1]] },
      {
        sql:
          'SELECT 1;\nALTER TABLE IF EXISTS ONLY s."T" ADD COLUMN a int,\n  DROP COLUMN IF EXISTS b, DROP c;',
        at: [[2, 1], [2, 1]],
      },
    ],
    passes: [
      "ALTER TABLE users DROP CONSTRAINT users_email_key;",
      "CREATE TABLE t (a int, b int);\nALTER TABLE t DROP COLUMN b;",
      "ALTER TABLE users ALTER COLUMN email DROP DEFAULT;",
    ],
  },
  {
    rule: "rename-table",
    fires: [
      { sql: "ALTER TABLE users RENAME TO accounts;", at: [[1, 1]] },
      { sql: "\n\nALTER SCHEMA app RENAME TO app_v2;", at: [[3, 1]] },
      { sql: "ALTER TABLE IF EXISTS users SET SCHEMA archive;", at: [[1, 1]] },
      { sql: "ALTER VIEW active_users RENAME TO live_users;", at: [[1, 1]] },
    ],
    passes: [
      "ALTER INDEX users_email_idx RENAME TO users_email_key;",
      "CREATE TABLE t (a int);\nALTER TABLE t RENAME TO t2;\nALTER TABLE t2 RENAME TO t3;",
      "ALTER TABLE users RENAME CONSTRAINT users_a TO users_b;",
      "ALTER SEQUENCE users_id_seq RENAME TO users_seq;",
    ],
  },
  {
    rule: "rename-column",
    fires: [
      {
        sql: "ALTER TABLE users RENAME COLUMN email TO email_address;",
        at: [[1, 1]],
      },
      { sql: "  ALTER TABLE public.users RENAME email TO mail;", at: [[1, 3]] },
    ],
    passes: [
      "ALTER TABLE users RENAME CONSTRAINT c1 TO c2;",
      "ALTER TABLE users ADD COLUMN email_address text;",
      "CREATE TABLE t (a int);\nALTER TABLE t RENAME COLUMN a TO b;",
    ],
  },
  {
    rule: "change-column-type",
    fires: [
      {
        sql: "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);",
        at: [[1, 1]],
      },
      {
        sql:
          "/* widen */ ALTER TABLE orders ALTER total SET DATA TYPE bigint USING total::bigint;",
        at: [[1, 13]],
      },
      {
        sql: "ALTER TABLE t ALTER a TYPE text, ALTER b TYPE varchar(200);",
        at: [[1, 1], [1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE orders ALTER COLUMN total SET DEFAULT 0;",
      "CREATE TABLE o (t int);\nALTER TABLE o ALTER t TYPE bigint;",
      "ALTER TYPE mood ADD VALUE 'meh';",
    ],
  },
  {
    rule: "drop-schema",
    fires: [
      { sql: "DROP SCHEMA reporting CASCADE;", at: [[1, 1]] },
      { sql: "SELECT 1;\nDROP SCHEMA IF EXISTS a, b;", at: [[2, 1], [2, 1]] },
    ],
    passes: [
      "CREATE SCHEMA reporting;",
      "DROP TYPE reporting.kind;",
      "SELECT 'DROP SCHEMA x';",
    ],
  },
  {
    rule: "drop-database",
    fires: [
      { sql: "DROP DATABASE analytics;", at: [[1, 1]] },
      { sql: '\tDROP DATABASE IF EXISTS "old-db" WITH (FORCE);', at: [[1, 2]] },
    ],
    passes: ["DROP ROLE analytics;", "CREATE DATABASE analytics;"],
  },
  {
    rule: "truncate",
    fires: [
      { sql: "TRUNCATE sessions;", at: [[1, 1]] },
      {
        sql:
          "SELECT 1;\n\n  TRUNCATE TABLE ONLY a, b RESTART IDENTITY CASCADE;",
        at: [[3, 3]],
      },
    ],
    passes: [
      "DELETE FROM sessions WHERE expires_at < now();",
      "CREATE TABLE s (id int);\nTRUNCATE s;",
    ],
  },
];

for (const c of CASES) {
  Deno.test(`lintSql() reports ${c.rule} as an error with its line and column`, async () => {
    for (const { sql, at } of c.fires) {
      const got = await findings(sql, c.rule);
      assert.deepEqual(
        got.map((f) => [f.line, f.column]),
        at,
        `${c.rule} on ${JSON.stringify(sql)}`,
      );
      for (const f of got) {
        assert.equal(f.severity, "error");
        assert.equal(f.allowed, false);
        assert.ok(f.message.length > 0 && f.help.length > 0);
      }
    }
  });
  Deno.test(`lintSql() does not report ${c.rule} for look-alikes`, async () => {
    for (const sql of c.passes) {
      assert.deepEqual(await findings(sql, c.rule), [], JSON.stringify(sql));
    }
  });
}

Deno.test("lintSql() marks breaking findings allowed under allowBreaking, and they stop blocking", async () => {
  const sql = "DROP TABLE users;\nALTER TABLE t DROP COLUMN c;";
  const strictOff = await lintSql(sql, "m.up.sql", OFF);
  assert.equal(blockingFindings(strictOff, false).length, 2);
  const allowed = await lintSql(sql, "m.up.sql", {
    allowBreaking: true,
    strict: false,
  });
  assert.deepEqual(allowed.map((f) => [f.rule, f.allowed]), [
    ["drop-table", true],
    ["drop-column", true],
  ]);
  assert.deepEqual(blockingFindings(allowed, true), []);
});

Deno.test("lintSql() honours an allow= directive only for the rules it names", async () => {
  const sql =
    "-- managed-migrate: allow=drop-column,rename-column\nALTER TABLE t DROP COLUMN c;\nALTER TABLE t RENAME COLUMN a TO b;\nDROP TABLE t2;";
  const got = await lintSql(sql, "m.up.sql", OFF);
  assert.deepEqual(got.map((f) => [f.rule, f.allowed, f.line]), [
    ["drop-column", true, 2],
    ["rename-column", true, 3],
    ["drop-table", false, 4],
  ]);
  assert.deepEqual(blockingFindings(got, false).map((f) => f.rule), [
    "drop-table",
  ]);
});

Deno.test("lintSql() ignores an allow= directive that is not a whole comment line at the top", async () => {
  const sql =
    "DROP TABLE t;\n-- managed-migrate: allow=drop-table\nSELECT '-- managed-migrate: allow=drop-table';";
  const got = await lintSql(sql, "m.up.sql", OFF);
  assert.deepEqual(got.map((f) => [f.rule, f.allowed]), [[
    "drop-table",
    false,
  ]]);
});
