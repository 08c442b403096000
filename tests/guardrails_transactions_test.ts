/** concurrently-in-transaction: CONCURRENTLY where PostgreSQL would refuse it. */
import assert from "node:assert/strict";
import {
  blockingFindings,
  type Finding,
  lintSql,
} from "../src/guardrails/mod.ts";
import { pgTest } from "./helpers/postgres.ts";

const OFF = { allowBreaking: false, strict: false };
const RULE = "concurrently-in-transaction";
const NO_TX = "-- managed-migrate: no-transaction\n";

async function findings(sql: string, options = OFF): Promise<Finding[]> {
  return (await lintSql(sql, "m.up.sql", options)).filter((f) =>
    f.rule === RULE
  );
}

Deno.test("lintSql() reports concurrently-in-transaction as an error with its line and column", async () => {
  const fires: [string, [number, number][]][] = [
    ["CREATE INDEX CONCURRENTLY i ON t (a);", [[1, 1]]],
    ["SELECT 1;\n  DROP INDEX CONCURRENTLY IF EXISTS i;", [[2, 3]]],
    ["REINDEX INDEX CONCURRENTLY i;", [[1, 1]]],
    ["REINDEX (VERBOSE) TABLE CONCURRENTLY app.t;", [[1, 1]]],
    // Even on a table this migration created: PostgreSQL refuses it all the same.
    ["CREATE TABLE t (a int);\nCREATE UNIQUE INDEX CONCURRENTLY i ON t (a);", [[
      2,
      1,
    ]]],
    // An explicit block in a no-transaction file is a transaction again.
    [NO_TX + "BEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;", [[
      3,
      1,
    ]]],
  ];
  for (const [sql, at] of fires) {
    const got = await findings(sql);
    assert.deepEqual(got.map((f) => [f.line, f.column]), at, sql);
    for (const f of got) assert.equal(f.severity, "error");
  }
});

Deno.test("lintSql() does not report concurrently-in-transaction in a no-transaction migration", async () => {
  const passes = [
    NO_TX + "CREATE INDEX CONCURRENTLY i ON t (a);",
    NO_TX + "DROP INDEX CONCURRENTLY i;",
    NO_TX + "BEGIN;\nSELECT 1;\nCOMMIT;\nREINDEX INDEX CONCURRENTLY i;",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY mv;",
    "SELECT 'CREATE INDEX CONCURRENTLY i ON t (a)';",
    "-- CREATE INDEX CONCURRENTLY i ON t (a);\nCREATE INDEX i ON t (a);",
  ];
  for (const sql of passes) assert.deepEqual(await findings(sql), [], sql);
});

Deno.test("lintSql() never lets --allow-breaking through concurrently-in-transaction, only allow=", async () => {
  const sql = "CREATE INDEX CONCURRENTLY i ON t (a);";
  const got = await findings(sql, { allowBreaking: true, strict: false });
  assert.equal(got[0].allowed, false);
  assert.equal(blockingFindings(got, false).length, 1);
  const named = await findings(`-- managed-migrate: allow=${RULE}\n${sql}`);
  assert.equal(named[0].allowed, true);
});

pgTest(
  "lintSql() reports concurrently-in-transaction for exactly what the server refuses in a transaction",
  async (db) => {
    await db.sql.unsafe("CREATE TABLE t (a int); CREATE INDEX t_a ON t (a);");
    const statements = [
      "CREATE INDEX CONCURRENTLY i2 ON t (a)",
      "DROP INDEX CONCURRENTLY t_a",
      "REINDEX INDEX CONCURRENTLY t_a",
    ];
    for (const statement of statements) {
      await assert.rejects(
        db.sql.begin((tx) => tx.unsafe(statement)),
        /cannot run inside a transaction block/,
      );
      assert.equal((await findings(`${statement};`)).length, 1, statement);
    }
  },
);
