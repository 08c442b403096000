import assert from "node:assert/strict";
import { pgTest } from "./helpers/postgres.ts";
import {
  migrationFailed,
  prepareSql,
  roundTrip,
} from "../src/engine/round_trip.ts";
import { discoverMigrations, discoverSeeds } from "../src/files/discover.ts";
import { snapshotSchema } from "../src/db/snapshot.ts";

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

async function load(dir: string) {
  return {
    migrations: await discoverMigrations(dir),
    seeds: await discoverSeeds(dir),
  };
}

/** Writes `files` (paths relative to a new temp db dir) and returns the dir. */
async function writeHistory(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "mm-roundtrip-" });
  await Deno.mkdir(`${dir}/managed-migrations`);
  await Deno.mkdir(`${dir}/managed-seeds`);
  for (const [path, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${path}`, text);
  }
  return dir;
}

const OPTIONS = { mode: "rollback", historySchema: "public" } as const;

Deno.test(
  "prepareSql() blanks only the CONCURRENTLY keyword of index statements, keeping every position",
  async () => {
    const text = [
      "-- managed-migrate: no-transaction",
      "-- CONCURRENTLY in a comment stays",
      "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
      "SELECT 'CONCURRENTLY é';",
      "DROP INDEX CONCURRENTLY old_idx;",
      "REINDEX INDEX CONCURRENTLY users_email_idx;",
    ].join("\n");
    const prepared = await prepareSql(text);
    assert.equal(prepared.inTransaction.length, text.length);
    const lines = prepared.inTransaction.split("\n");
    assert.equal(lines[1], "-- CONCURRENTLY in a comment stays");
    assert.equal(
      lines[2],
      "CREATE INDEX              users_email_idx ON users (email);",
    );
    assert.equal(lines[3], "SELECT 'CONCURRENTLY é';");
    assert.equal(lines[4], "DROP INDEX              old_idx;");
    assert.equal(lines[5], "REINDEX INDEX              users_email_idx;");
    assert.deepEqual(
      prepared.notes,
      [3, 5, 6].map((n) =>
        `line ${n}: CONCURRENTLY removed to run inside the test transaction`
      ),
    );
    // Split for running outside a transaction: original text, one statement each.
    assert.equal(prepared.statements.length, 4);
    assert.equal(
      prepared.statements[0].sql,
      "CREATE INDEX CONCURRENTLY users_email_idx ON users (email)",
    );
    assert.equal(
      text.slice(prepared.statements[2].offset).startsWith("DROP INDEX"),
      true,
    );
  },
);

Deno.test(
  "prepareSql() blanks COMMIT, BEGIN and VACUUM, which would end or break the test transaction",
  async () => {
    const text = "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\nVACUUM t;\n";
    const prepared = await prepareSql(text);
    assert.equal(
      prepared.inTransaction,
      "     ;\nCREATE TABLE t (id int);\n      ;\n        ;\n",
    );
    assert.deepEqual(prepared.notes, [
      "line 1: transaction control (BEGIN) ignored inside the test transaction",
      "line 3: transaction control (COMMIT) ignored inside the test transaction",
      "line 4: Vacuum skipped: it cannot run inside a transaction",
    ]);
    assert.deepEqual(
      prepared.inTransactionStatements.map((s) => s.sql),
      ["CREATE TABLE t (id int)"],
    );
  },
);

pgTest(
  "roundTrip() reports an index a down forgot to drop, and goes on with the next migration",
  async ({ sql }) => {
    const { migrations, seeds } = await load(fixture("roundtrip_index_left"));
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    assert.equal(result.ok, false);
    const [first, bad, last] = result.migrations;
    assert.equal(migrationFailed(first), false);
    assert.equal(bad.roundTrip, "failed");
    assert.equal(bad.down, "ok");
    assert.equal(bad.upAgain, "skipped");
    assert.deepEqual(bad.diff, [
      "+ index public.orders_customer_idx: CREATE INDEX orders_customer_idx ON public.orders USING btree (customer)",
    ]);
    assert.deepEqual(
      [last.up, last.down, last.roundTrip, last.upAgain],
      ["ok", "ok", "ok", "ok"],
    );
  },
);

pgTest(
  "roundTrip() reports a down that drops the wrong column",
  async ({ sql }) => {
    const { migrations, seeds } = await load(
      fixture("roundtrip_wrong_column"),
    );
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    const bad = result.migrations[1];
    assert.equal(bad.roundTrip, "failed");
    // PostgreSQL 18 also lists the NOT NULL constraint of full_name.
    assert.deepEqual(
      bad.diff.filter((l) => l.startsWith("- column") || l.startsWith("+ ")),
      [
        "- column public.people.full_name #2: text not null",
        "+ column public.people.nickname #2: text",
      ],
    );
  },
);

pgTest(
  "roundTrip() reports an enum value that the down leaves behind",
  async ({ sql }) => {
    const { migrations, seeds } = await load(fixture("roundtrip_enum_value"));
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    const bad = result.migrations[1];
    assert.equal(bad.up, "ok");
    assert.equal(bad.roundTrip, "failed");
    assert.deepEqual(bad.diff, [
      "- type public.ticket_status: enum ('open', 'closed')",
      "+ type public.ticket_status: enum ('open', 'pending', 'closed')",
    ]);
  },
);

pgTest(
  "roundTrip() passes a correct history with no-transaction, enum and irreversible migrations, then runs the seeds",
  async ({ sql }) => {
    const { migrations, seeds } = await load(fixture("roundtrip_good"));
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    assert.equal(result.ok, true, JSON.stringify(result, null, 2));
    assert.deepEqual(
      result.migrations.map((r) => [r.up, r.down, r.roundTrip, r.upAgain]),
      [
        ["ok", "ok", "ok", "ok"],
        ["ok", "ok", "ok", "ok"],
        ["ok", "ok", "ok", "ok"],
        ["ok", "ok", "ok", "ok"],
        ["ok", "irreversible", "skipped", "skipped"],
      ],
    );
    assert.ok(
      result.migrations[1].notes.some((n) =>
        n.includes("CONCURRENTLY removed")
      ),
    );
    assert.deepEqual(result.seeds.map((s) => s.status), ["ok"]);
  },
);

pgTest(
  "roundTrip() stops at a failing up and names its file, line and column",
  async ({ sql }) => {
    const { migrations, seeds } = await load(fixture("roundtrip_up_fails"));
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    assert.equal(result.ok, false);
    assert.deepEqual(result.migrations.map((r) => r.up), [
      "ok",
      "failed",
      "skipped",
    ]);
    assert.match(
      result.migrations[1].error ?? "",
      /202405010002_broken\.up\.sql:3:1: relation "item_skus" does not exist$/,
    );
    assert.deepEqual(result.seeds.map((s) => s.status), ["skipped"]);
  },
);

pgTest(
  "roundTrip() maps a server error position to line and column in the file",
  async ({ sql }) => {
    const dir = await writeHistory({
      "managed-migrations/1_a.up.sql": "CREATE TABLE a (id int);\n",
      "managed-migrations/1_a.down.sql":
        "-- check first\nSELECT id,\n       nope FROM a;\nDROP TABLE a;\n",
    });
    try {
      const { migrations } = await load(dir);
      const result = await roundTrip(sql, migrations, [], OPTIONS);
      const r = result.migrations[0];
      assert.equal(r.down, "failed");
      assert.match(
        r.error ?? "",
        /1_a\.down\.sql:3:8: column "nope" does not exist$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

pgTest(
  "roundTrip() continues from the state after up when a down fails",
  async ({ sql }) => {
    const dir = await writeHistory({
      "managed-migrations/1_a.up.sql": "CREATE TABLE a (id int);\n",
      "managed-migrations/1_a.down.sql": "DROP TABLE a;\nDROP TABLE missing;\n",
      "managed-migrations/2_b.up.sql": "ALTER TABLE a ADD COLUMN b int;\n",
      "managed-migrations/2_b.down.sql": "ALTER TABLE a DROP COLUMN b;\n",
    });
    try {
      const { migrations } = await load(dir);
      const result = await roundTrip(sql, migrations, [], OPTIONS);
      assert.equal(result.migrations[0].down, "failed");
      assert.equal(result.migrations[0].roundTrip, "skipped");
      // 2_b needs table a: the failed down was rolled back to the savepoint.
      assert.deepEqual(
        [
          result.migrations[1].up,
          result.migrations[1].down,
          result.migrations[1].roundTrip,
        ],
        ["ok", "ok", "ok"],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

pgTest(
  "roundTrip() reports an up that does not apply again after its own down",
  async ({ sql }) => {
    const dir = await writeHistory({
      "managed-migrations/1_a.up.sql":
        "CREATE TABLE plans (id int PRIMARY KEY);\n",
      "managed-migrations/1_a.down.sql": "DROP TABLE plans;\n",
      // The down restores the schema but leaves the row: a second up collides.
      "managed-migrations/2_b.up.sql": "INSERT INTO plans VALUES (1);\n",
      "managed-migrations/2_b.down.sql": "-- nothing to undo\n",
    });
    try {
      const { migrations } = await load(dir);
      const result = await roundTrip(sql, migrations, [], OPTIONS);
      const r = result.migrations[1];
      assert.deepEqual([r.up, r.down, r.roundTrip, r.upAgain], [
        "ok",
        "ok",
        "ok",
        "failed",
      ]);
      assert.match(
        r.error ?? "",
        /^up again after down: .*2_b\.up\.sql:1:1: duplicate key/,
      );
      assert.equal(result.ok, false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

pgTest(
  "roundTrip() reports what a down leaves behind with a + line",
  async ({ sql }) => {
    const dir = await writeHistory({
      "managed-migrations/1_a.up.sql":
        "CREATE TABLE keep (id int PRIMARY KEY);\n",
      "managed-migrations/1_a.down.sql": "SELECT 1;\n",
    });
    try {
      const { migrations } = await load(dir);
      const result = await roundTrip(sql, migrations, [], OPTIONS);
      const r = result.migrations[0];
      assert.equal(r.roundTrip, "failed");
      assert.equal(r.upAgain, "skipped");
      assert.ok(r.diff.includes("+ table public.keep"), r.diff.join("\n"));
      assert.ok(r.diff.every((l) => l.startsWith("+ ")));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

pgTest(
  "roundTrip() in rollback mode leaves the database as it was, without history tables",
  async ({ sql }) => {
    await sql.unsafe("create table existing (id int primary key)");
    const before = await snapshotSchema(sql);
    const { migrations, seeds } = await load(fixture("roundtrip_good"));
    const result = await roundTrip(sql, migrations, seeds, OPTIONS);
    assert.equal(result.ok, true);
    assert.deepEqual((await snapshotSchema(sql)).lines, before.lines);
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_class
      where relname in ('managed_migrations', 'seed_history', 'users')`;
    assert.equal(n, 0);
  },
);

pgTest(
  "roundTrip() in commit mode runs no-transaction migrations for real and keeps the result",
  async ({ sql }) => {
    const { migrations, seeds } = await load(fixture("roundtrip_good"));
    const result = await roundTrip(sql, migrations, seeds, {
      mode: "commit",
      historySchema: "public",
    });
    assert.equal(result.ok, true, JSON.stringify(result, null, 2));
    assert.ok(
      result.migrations[1].notes.some((n) => n.includes("run for real")),
    );
    const [index] = await sql<{ valid: boolean }[]>`
      select i.indisvalid as valid from pg_index i
      where i.indexrelid = 'public.users_email_idx'::regclass`;
    assert.equal(index.valid, true);
    const [{ n }] = await sql<
      { n: number }[]
    >`select count(*)::int as n from users`;
    assert.equal(n, 1, "the seed ran and was committed");
  },
);

pgTest(
  "roundTrip() in commit mode reports a no-transaction down that only fails for real",
  async ({ sql }) => {
    const dir = await writeHistory({
      "managed-migrations/1_t.up.sql": "CREATE TABLE t (a int, b int);\n",
      "managed-migrations/1_t.down.sql": "DROP TABLE t;\n",
      "managed-migrations/2_idx.up.sql":
        "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_b ON t (b);\n",
      // PostgreSQL refuses to drop several indexes concurrently in one statement.
      "managed-migrations/2_idx.down.sql":
        "-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY t_a, t_b;\n",
    });
    try {
      const { migrations } = await load(dir);
      const inTransaction = await roundTrip(sql, migrations, [], OPTIONS);
      assert.equal(inTransaction.ok, true);
      const result = await roundTrip(sql, migrations, [], {
        mode: "commit",
        historySchema: "public",
      });
      const r = result.migrations[1];
      assert.equal(r.down, "failed");
      assert.match(
        r.error ?? "",
        /^for real: .*2_idx\.down\.sql:2:1: DROP INDEX CONCURRENTLY does not support dropping multiple objects/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
