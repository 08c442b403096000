/** dynamic-sql: DO, CALL, EXECUTE and calls of functions the linter cannot see into. */
import assert from "node:assert/strict";
import { type Finding, lintSql } from "../src/guardrails/mod.ts";

const OFF = { allowBreaking: false, strict: false };

async function lint(sql: string): Promise<Finding[]> {
  return await lintSql(sql, "m.up.sql", OFF);
}

Deno.test("lintSql() reports dynamic-sql as a warning with its line and column", async () => {
  const fires: [string, [number, number][]][] = [
    ["DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'users'; END $$;", [[1, 1]]],
    ["SELECT 1;\n  CALL app.backfill_users(1000);", [[2, 3]]],
    ["DO LANGUAGE plpgsql $body$ BEGIN PERFORM 1; END $body$;", [[1, 1]]],
    ["SELECT create_hypertable('metrics', 'time');", [[1, 1]]],
    [
      "CREATE FUNCTION backfill() RETURNS void LANGUAGE sql AS $$ UPDATE t SET a = 1 $$;\nSELECT backfill();",
      [[2, 1]],
    ],
    ["PREPARE p AS DELETE FROM t;\nEXECUTE p;", [[2, 1]]],
  ];
  for (const [sql, at] of fires) {
    const got = (await lint(sql)).filter((f) => f.rule === "dynamic-sql");
    assert.deepEqual(got.map((f) => [f.line, f.column]), at, sql);
    for (const f of got) assert.equal(f.severity, "warning");
  }
});

Deno.test("lintSql() reports nothing for function and procedure definitions, whatever their bodies say", async () => {
  const passes = [
    "CREATE FUNCTION drop_all() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE users; TRUNCATE orders; END $$;",
    "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS $body$ ALTER TABLE t DROP COLUMN c; CREATE INDEX i ON t (a) $body$;",
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;\nCREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();",
    "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql IMMUTABLE RETURN a + 1;",
  ];
  for (const sql of passes) assert.deepEqual(await lint(sql), [], sql);
});

Deno.test("lintSql() does not report dynamic-sql for built-in function calls", async () => {
  const passes = [
    "SELECT pg_catalog.set_config('search_path', '', false);",
    "SELECT setval('users_id_seq', (SELECT max(id) FROM users));",
    "SELECT count(*), now(), lower('X') FROM users;",
    "INSERT INTO t (a) SELECT generate_series(1, 10);",
    "SELECT 'DO $$ BEGIN END $$';",
  ];
  for (const sql of passes) {
    assert.deepEqual(
      (await lint(sql)).filter((f) => f.rule === "dynamic-sql"),
      [],
      sql,
    );
  }
});
