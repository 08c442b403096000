/** Maintenance rules (warnings): vacuum-full, cluster, reindex-blocking. */
import assert from "node:assert/strict";
import { type Finding, lintSql } from "../src/guardrails/mod.ts";

const OFF = { allowBreaking: false, strict: false };
const NO_TX = "-- managed-migrate: no-transaction\n";

async function findings(sql: string, rule: string): Promise<Finding[]> {
  return (await lintSql(sql, "m.up.sql", OFF)).filter((f) => f.rule === rule);
}

const CASES: {
  rule: string;
  fires: [string, [number, number][]][];
  passes: string[];
}[] = [
  {
    rule: "vacuum-full",
    fires: [
      ["VACUUM FULL events;", [[1, 1]]],
      ["SELECT 1;\n VACUUM (FULL, ANALYZE, VERBOSE) app.events, logs;", [[
        2,
        2,
      ]]],
      ["VACUUM FULL;", [[1, 1]]],
    ],
    passes: [
      "VACUUM events;",
      "VACUUM (ANALYZE) events;",
      "VACUUM (FULL false) events;",
      "ANALYZE events;",
      "CREATE TABLE t (a int);\nVACUUM FULL t;",
    ],
  },
  {
    rule: "cluster",
    fires: [
      ["CLUSTER events USING events_created_idx;", [[1, 1]]],
      ["/* reorder */\nCLUSTER VERBOSE app.events;", [[2, 1]]],
      ["CLUSTER;", [[1, 1]]],
    ],
    passes: [
      "ALTER TABLE events CLUSTER ON events_created_idx;",
      "SELECT 'CLUSTER events';",
      "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nCLUSTER t USING t_a;",
    ],
  },
  {
    rule: "reindex-blocking",
    fires: [
      ["REINDEX INDEX users_email_idx;", [[1, 1]]],
      ["SELECT 1;\n\tREINDEX TABLE app.users;", [[2, 2]]],
      ["REINDEX SCHEMA app;", [[1, 1]]],
      ["REINDEX (CONCURRENTLY false) INDEX i;", [[1, 1]]],
    ],
    passes: [
      NO_TX + "REINDEX INDEX CONCURRENTLY users_email_idx;",
      NO_TX + "REINDEX (VERBOSE) TABLE CONCURRENTLY users;",
      "CREATE TABLE t (a int);\nREINDEX TABLE t;",
      "-- REINDEX TABLE users;\nSELECT 1;",
    ],
  },
];

for (const c of CASES) {
  Deno.test(`lintSql() reports ${c.rule} as a warning with its line and column`, async () => {
    for (const [sql, at] of c.fires) {
      const got = await findings(sql, c.rule);
      assert.deepEqual(got.map((f) => [f.line, f.column]), at, sql);
      for (const f of got) assert.equal(f.severity, "warning");
    }
  });
  Deno.test(`lintSql() does not report ${c.rule} for look-alikes`, async () => {
    for (const sql of c.passes) {
      assert.deepEqual(await findings(sql, c.rule), [], sql);
    }
  });
}
