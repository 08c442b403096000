/** Locking-hazard rules (warnings) of SPEC §6, with PostgreSQL 11-18 semantics. */
import assert from "node:assert/strict";
import {
  blockingFindings,
  type Finding,
  lintFiles,
  lintSql,
} from "../src/guardrails/mod.ts";
import { pgTest } from "./helpers/postgres.ts";

const OFF = { allowBreaking: false, strict: false };

async function findings(sql: string, rule: string): Promise<Finding[]> {
  return (await lintSql(sql, "m.up.sql", OFF)).filter((f) => f.rule === rule);
}

const NO_TX = "-- managed-migrate: no-transaction\n";

interface Case {
  rule: string;
  fires: { sql: string; at: [number, number][] }[];
  passes: string[];
}

const CASES: Case[] = [
  {
    rule: "create-index-blocking",
    fires: [
      { sql: "CREATE INDEX users_email_idx ON users (email);", at: [[1, 1]] },
      {
        sql:
          "CREATE TABLE n (id int);\n  CREATE UNIQUE INDEX IF NOT EXISTS i ON app.users USING btree (lower(email));",
        at: [[2, 3]],
      },
    ],
    passes: [
      NO_TX + "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
      "CREATE TABLE t (a int);\nCREATE INDEX t_a_idx ON t (a);",
      "CREATE INDEX measurements_idx ON ONLY measurements (ts);",
      "CREATE TABLE app.t (a int);\nCREATE INDEX ON t (a);",
      "CREATE MATERIALIZED VIEW daily AS SELECT 1 AS d;\nCREATE UNIQUE INDEX daily_d ON daily (d);",
    ],
  },
  {
    rule: "drop-index-blocking",
    fires: [
      { sql: "DROP INDEX users_email_idx;", at: [[1, 1]] },
      {
        sql: "SELECT 1;\nDROP INDEX IF EXISTS app.a_idx, b_idx CASCADE;",
        at: [[2, 1]],
      },
    ],
    passes: [
      NO_TX + "DROP INDEX CONCURRENTLY IF EXISTS users_email_idx;",
      "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nDROP INDEX t_a;",
      "DROP TABLE IF EXISTS users_email_idx_backup_view CASCADE; -- not an index"
        .replace(
          "DROP TABLE",
          "DROP VIEW",
        ),
    ],
  },
  {
    rule: "add-foreign-key-validating",
    fires: [
      {
        sql:
          "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);",
        at: [[1, 1]],
      },
      {
        sql:
          "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT fk;",
        at: [[2, 1]],
      },
      {
        sql:
          "ALTER TABLE orders ADD COLUMN shop_id int DEFAULT 1 REFERENCES shops (id);",
        at: [[1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
      "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
      NO_TX +
      "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT fk;",
      "ALTER TABLE orders ADD COLUMN shop_id int REFERENCES shops (id);",
      "CREATE TABLE items (id int, order_id int);\nALTER TABLE items ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES orders (id);",
      "CREATE TABLE items (id int, order_id int REFERENCES orders (id));",
    ],
  },
  {
    rule: "add-check-validating",
    fires: [
      {
        sql: "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
        at: [[1, 1]],
      },
      {
        sql:
          "ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0) NOT VALID;\n\nALTER TABLE orders VALIDATE CONSTRAINT c;",
        at: [[3, 1]],
      },
      {
        sql: "ALTER TABLE orders ADD COLUMN qty int CHECK (qty > 0);",
        at: [[1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0) NOT VALID;",
      NO_TX +
      "ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT c;",
      "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);",
      "ALTER TABLE orders DROP CONSTRAINT IF EXISTS c;",
    ],
  },
  {
    rule: "set-not-null",
    fires: [
      {
        sql: "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
        at: [[1, 1]],
      },
      {
        sql:
          "ALTER TABLE users ALTER email SET DEFAULT '',\n  ALTER name SET NOT NULL;",
        at: [[1, 1]],
      },
      {
        sql: "ALTER TABLE users ADD CONSTRAINT users_email_nn NOT NULL email;",
        at: [[1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE users ALTER COLUMN email DROP NOT NULL;",
      "CREATE TABLE t (a int);\nALTER TABLE t ALTER a SET NOT NULL;",
      NO_TX +
      "ALTER TABLE users ADD CONSTRAINT nn CHECK (email IS NOT NULL) NOT VALID;\nALTER TABLE users VALIDATE CONSTRAINT nn;\nALTER TABLE users ALTER COLUMN email SET NOT NULL;\nALTER TABLE users DROP CONSTRAINT nn;",
      "ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;",
    ],
  },
  {
    rule: "add-column-volatile-default",
    fires: [
      {
        sql:
          "ALTER TABLE users ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();",
        at: [[1, 1]],
      },
      { sql: "ALTER TABLE users ADD COLUMN n bigserial;", at: [[1, 1]] },
      {
        sql:
          "ALTER TABLE users ADD COLUMN id2 int GENERATED ALWAYS AS IDENTITY;",
        at: [[1, 1]],
      },
      {
        sql:
          "ALTER TABLE t ADD COLUMN total numeric GENERATED ALWAYS AS (price * qty) STORED;",
        at: [[1, 1]],
      },
      {
        sql:
          "ALTER TABLE t ADD COLUMN r int DEFAULT (random() * 100)::int, ADD COLUMN s int DEFAULT nextval('s_seq'),\n ADD COLUMN u uuid DEFAULT uuid_generate_v4(), ADD COLUMN c timestamptz DEFAULT clock_timestamp(), ADD COLUMN x text DEFAULT timeofday();",
        at: [[1, 1], [1, 1], [1, 1], [1, 1], [1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();",
      "ALTER TABLE users ADD COLUMN d date DEFAULT CURRENT_DATE, ADD COLUMN ts timestamptz DEFAULT CURRENT_TIMESTAMP;",
      "ALTER TABLE users ADD COLUMN score int NOT NULL DEFAULT 0, ADD COLUMN tags jsonb DEFAULT '{}'::jsonb;",
      "ALTER TABLE users ALTER COLUMN public_id SET DEFAULT gen_random_uuid();",
      "CREATE TABLE t (id bigserial PRIMARY KEY, u uuid DEFAULT gen_random_uuid());",
      "ALTER TABLE t ADD COLUMN total numeric GENERATED ALWAYS AS (price * qty) VIRTUAL;",
      "ALTER TABLE t ADD COLUMN note text DEFAULT 'random()';",
    ],
  },
  {
    rule: "add-unique-constraint",
    fires: [
      {
        sql: "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
        at: [[1, 1]],
      },
      { sql: "ALTER TABLE users ADD COLUMN handle text UNIQUE;", at: [[1, 1]] },
      {
        sql:
          "ALTER TABLE bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (room WITH =, during WITH &&);",
        at: [[1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
      NO_TX +
      "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);",
      "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a);",
    ],
  },
  {
    rule: "add-primary-key",
    fires: [
      { sql: "ALTER TABLE events ADD PRIMARY KEY (id);", at: [[1, 1]] },
      {
        sql:
          "ALTER TABLE events ADD COLUMN id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY;",
        at: [[1, 1]],
      },
    ],
    passes: [
      "ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_id_idx;",
      "CREATE TABLE t (id int);\nALTER TABLE t ADD PRIMARY KEY (id);",
      "CREATE TABLE t (id int PRIMARY KEY);",
    ],
  },
];

for (const c of CASES) {
  Deno.test(`lintSql() reports ${c.rule} as a warning with its line and column`, async () => {
    for (const { sql, at } of c.fires) {
      const got = await findings(sql, c.rule);
      assert.deepEqual(
        got.map((f) => [f.line, f.column]),
        at,
        `${c.rule} on ${JSON.stringify(sql)}`,
      );
      for (const f of got) assert.equal(f.severity, "warning");
    }
  });
  Deno.test(`lintSql() does not report ${c.rule} for look-alikes and safe recipes`, async () => {
    for (const sql of c.passes) {
      assert.deepEqual(await findings(sql, c.rule), [], JSON.stringify(sql));
    }
  });
}

Deno.test("lintSql() reports nothing at all for the online recipes", async () => {
  const safe = [
    NO_TX +
    "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);",
    "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
    "ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_pkey;",
    "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
    "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
    "ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();",
    "ALTER TABLE users ADD COLUMN org_id bigint REFERENCES orgs (id);",
    "CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz DEFAULT clock_timestamp(), CHECK (id > 0));\nCREATE INDEX audit_at ON audit (at);\nALTER TABLE audit ADD COLUMN u uuid DEFAULT gen_random_uuid() UNIQUE;",
  ];
  for (const sql of safe) {
    assert.deepEqual(await lintSql(sql, "m.up.sql", OFF), [], sql);
  }
});

Deno.test("lintFiles() lets a CHECK validated in an earlier migration make SET NOT NULL safe", async () => {
  const files = [
    {
      file: "1.up.sql",
      sql:
        "ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;",
    },
    {
      file: "2.up.sql",
      sql: "ALTER TABLE users VALIDATE CONSTRAINT users_email_nn;",
    },
    {
      file: "3.up.sql",
      sql:
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\nALTER TABLE users DROP CONSTRAINT users_email_nn;",
    },
  ];
  assert.deepEqual(await lintFiles(files, OFF), []);
  // The last file alone cannot know about the check.
  const alone = await lintFiles([files[2]], OFF);
  assert.deepEqual(alone.map((f) => f.rule), ["set-not-null"]);
});

Deno.test("blockingFindings() blocks locking warnings only under strict", async () => {
  const got = await lintSql("CREATE INDEX i ON t (a);", "m.up.sql", OFF);
  assert.deepEqual(blockingFindings(got, false), []);
  assert.deepEqual(blockingFindings(got, true).map((f) => f.rule), [
    "create-index-blocking",
  ]);
  const allowed = await lintSql(
    "-- managed-migrate: allow=create-index-blocking\nCREATE INDEX i ON t (a);",
    "m.up.sql",
    OFF,
  );
  assert.equal(allowed[0].allowed, true);
  assert.deepEqual(blockingFindings(allowed, true), []);
});

// The semantics the rule relies on, checked on real servers: a rewrite gives
// the table a new relfilenode; a catalog-only ADD COLUMN keeps it.
pgTest(
  "lintSql() reports add-column-volatile-default exactly for the ADD COLUMNs that rewrite the table on the server",
  async (db) => {
    await db.sql.unsafe(
      "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    const cases: [string, boolean][] = [
      ["ADD COLUMN a timestamptz NOT NULL DEFAULT now()", false],
      ["ADD COLUMN b date DEFAULT CURRENT_DATE", false],
      ["ADD COLUMN c int NOT NULL DEFAULT 0", false],
      ["ADD COLUMN d int REFERENCES t2 (id)", false],
      ["ADD COLUMN e float8 DEFAULT random()", true],
      ["ADD COLUMN f bigserial", true],
      ["ADD COLUMN g int GENERATED ALWAYS AS IDENTITY", true],
      ["ADD COLUMN h int GENERATED ALWAYS AS (id * 2) STORED", true],
      ["ADD COLUMN i timestamptz DEFAULT clock_timestamp()", true],
    ];
    await db.sql.unsafe("CREATE TABLE t2 (id int PRIMARY KEY)");
    for (const [action, rewrites] of cases) {
      const before = await db.sql`SELECT pg_relation_filenode('t') AS f`;
      await db.sql.unsafe(`ALTER TABLE t ${action}`);
      const after = await db.sql`SELECT pg_relation_filenode('t') AS f`;
      assert.equal(before[0].f !== after[0].f, rewrites, `server: ${action}`);
      const got = await findings(
        `ALTER TABLE t ${action};`,
        "add-column-volatile-default",
      );
      assert.equal(got.length > 0, rewrites, `lint: ${action}`);
    }
  },
);
