import assert from "node:assert/strict";
import { pgTest } from "./helpers/postgres.ts";
import { runCli } from "./helpers/cli.ts";
import { makeDbDir } from "./helpers/db_dir.ts";

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

async function tables(sql: import("postgres").Sql): Promise<string[]> {
  const rows =
    await sql`select tablename from pg_tables where schemaname = 'public' order by 1`;
  return rows.map((r) => r.tablename as string);
}

async function history(sql: import("postgres").Sql): Promise<string[]> {
  const rows =
    await sql`select version, state from managed_migrations order by version`;
  return rows.map((r) => `${r.version}:${r.state}`);
}

pgTest(
  "migrate applies every pending migration, records history, and is then up to date",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const first = await runCli([
      "--dir",
      fixture("basic"),
      "--json",
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(first.code, 0, first.stderr);
    const doc = first.json as {
      applied: { version: string }[];
      dryRun: boolean;
      backup: unknown;
    };
    assert.deepEqual(doc.applied.map((a) => a.version), [
      "0001",
      "0002",
      "0003",
    ]);
    assert.equal(doc.dryRun, false);
    assert.equal(doc.backup, null);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "posts",
      "seed_history",
      "users",
    ]);
    assert.deepEqual(await history(db.sql), [
      "0001:applied",
      "0002:applied",
      "0003:applied",
    ]);
    const [row] = await db
      .sql`select checksum, applied_by, duration_ms from managed_migrations where version = '0001'`;
    assert.match(row.checksum, /^[0-9a-f]{64}$/);
    assert.equal(row.applied_by, "postgres");

    const again = await runCli([
      "--dir",
      fixture("basic"),
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(again.code, 0);
    assert.match(again.stdout, /Up to date/);
  },
);

pgTest(
  "migrate --to stops at the named version; --dry-run changes nothing, not even history tables",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const dry = await runCli([
      "--dir",
      fixture("basic"),
      "--json",
      "migrate",
      "--dry-run",
    ], { env });
    assert.equal(dry.code, 0, dry.stderr);
    const plan = dry.json as {
      dryRun: boolean;
      pending: { version: string; sql: string }[];
    };
    assert.equal(plan.dryRun, true);
    assert.deepEqual(plan.pending.map((p) => p.version), [
      "0001",
      "0002",
      "0003",
    ]);
    assert.match(plan.pending[0].sql, /CREATE TABLE users/);
    assert.deepEqual(await tables(db.sql), []);

    const to = await runCli([
      "--dir",
      fixture("basic"),
      "migrate",
      "--no-backup",
      "--to",
      "0002_placeholder",
    ], { env });
    assert.equal(to.code, 0, to.stderr);
    assert.deepEqual(await history(db.sql), ["0001:applied", "0002:applied"]);

    const unknown = await runCli([
      "--dir",
      fixture("basic"),
      "migrate",
      "--no-backup",
      "--to",
      "0042",
    ], { env });
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /No migration "0042"/);
  },
);

pgTest(
  "rollback undoes the newest migration, --steps and --to undo more, and migrate re-applies",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const dir = fixture("basic");
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    const one = await runCli([
      "--dir",
      dir,
      "--json",
      "rollback",
      "--no-backup",
    ], { env });
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(
      (one.json as { rolledBack: { version: string }[] }).rolledBack.map((r) =>
        r.version
      ),
      ["0003"],
    );
    assert.deepEqual(await history(db.sql), ["0001:applied", "0002:applied"]);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "seed_history",
      "users",
    ]);

    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    const steps = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--steps",
      "2",
    ], { env });
    assert.equal(steps.code, 0, steps.stderr);
    assert.deepEqual(await history(db.sql), ["0001:applied"]);

    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    const to = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--to",
      "0001",
    ], { env });
    assert.equal(to.code, 0, to.stderr);
    assert.deepEqual(await history(db.sql), ["0001:applied"]);

    const all = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--steps",
      "5",
    ], { env });
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(await history(db.sql), []);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "seed_history",
    ]);

    const nothing = await runCli(["--dir", dir, "rollback", "--no-backup"], {
      env,
    });
    assert.equal(nothing.code, 0);
    assert.match(nothing.stdout, /Nothing to roll back/);
  },
);

pgTest(
  "rollback refuses an irreversible migration before running anything",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const dir = fixture("irreversible");
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    const r = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--steps",
      "3",
    ], { env });
    assert.equal(r.code, 4);
    assert.match(
      r.stderr,
      /Cannot roll back "0002_b": it is marked irreversible/,
    );
    assert.deepEqual(await history(db.sql), [
      "0001:applied",
      "0002:applied",
      "0003:applied",
    ]);
    const one = await runCli(["--dir", dir, "rollback", "--no-backup"], {
      env,
    });
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(await history(db.sql), ["0001:applied", "0002:applied"]);
  },
);

pgTest(
  "a failing statement names file:line:column, keeps earlier migrations and nothing of the failing one",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const r = await runCli([
      "--dir",
      fixture("failing"),
      "--json",
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /0002_broken\.up\.sql:4:10/);
    assert.match(r.stderr, /column "nope" does not exist/);
    assert.match(r.stderr, /applied before it: 0001_ok/);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
    const err = (r.json as {
      error: { code: number; line: number; column: number; sqlstate: string };
    }).error;
    assert.equal(err.code, 1);
    assert.equal(err.line, 4);
    assert.equal(err.column, 10);
    assert.equal(err.sqlstate, "42703");
    assert.deepEqual(await history(db.sql), ["0001:applied"]);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "ok1",
      "seed_history",
    ]);
  },
);

pgTest(
  "migrate refuses drift: a changed file, a missing file, a migration left running (exit 4)",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const { dir, write, remove } = await makeDbDir();
    await write("1_a.up.sql", "CREATE TABLE a (id int);\n");
    await write("1_a.down.sql", "DROP TABLE a;\n");
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );

    await write("1_a.up.sql", "CREATE TABLE a (id bigint);\n");
    await write("2_b.up.sql", "CREATE TABLE b (id int);\n");
    await write("2_b.down.sql", "DROP TABLE b;\n");
    const changed = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env,
    });
    assert.equal(changed.code, 4);
    assert.match(changed.stderr, /Applied migration "1_a" was changed/);
    const status = await runCli(["--dir", dir, "--json", "status", "--check"], {
      env,
    });
    assert.equal(status.code, 5);
    assert.deepEqual(
      (status.json as { migrations: { state: string }[] }).migrations.map((m) =>
        m.state
      ),
      ["changed", "pending"],
    );
    assert.equal(
      await db.sql`select to_regclass('b') as t`.then((r) => r[0].t),
      null,
    );

    await Deno.remove(`${dir}/managed-migrations/1_a.up.sql`);
    await Deno.remove(`${dir}/managed-migrations/1_a.down.sql`);
    const missing = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env,
    });
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /has no file/);

    await write("1_a.up.sql", "CREATE TABLE a (id int);\n");
    await write("1_a.down.sql", "DROP TABLE a;\n");
    await db.sql`update managed_migrations set state = 'running'`;
    const running = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env,
    });
    assert.equal(running.code, 4);
    assert.match(running.stderr, /repair 1 --applied/);
    const repaired = await runCli(["--dir", dir, "repair", "1", "--applied"], {
      env,
    });
    assert.equal(repaired.code, 0, repaired.stderr);
    const after = await runCli([
      "--dir",
      dir,
      "--json",
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(
      (after.json as { applied: { version: string }[] }).applied.map((a) =>
        a.version
      ),
      ["2"],
    );
    await remove();
  },
);

pgTest(
  "no-transaction migrations run CREATE INDEX CONCURRENTLY and roll back with DROP INDEX CONCURRENTLY",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const dir = fixture("no_transaction_index");
    const r = await runCli(["--dir", dir, "migrate", "--no-backup"], { env });
    assert.equal(r.code, 0, r.stderr);
    const idx = await db
      .sql`select indexname from pg_indexes where tablename = 'items' order by 1`;
    assert.deepEqual(idx.map((i) => i.indexname), [
      "items_id_sku_idx",
      "items_pkey",
      "items_sku_idx",
    ]);
    assert.deepEqual(await history(db.sql), ["0001:applied", "0002:applied"]);
    const single = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--steps",
      "2",
    ], { env });
    assert.equal(single.code, 0, single.stderr);
    assert.deepEqual(await history(db.sql), []);
    const refused = await runCli([
      "--dir",
      dir,
      "migrate",
      "--no-backup",
      "--single-transaction",
    ], { env });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /no-transaction migration/);
  },
);

pgTest(
  "migrate --single-transaction applies all pending migrations in one transaction, all or nothing",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const ok = await runCli([
      "--dir",
      fixture("basic"),
      "migrate",
      "--no-backup",
      "--single-transaction",
    ], { env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(await history(db.sql), [
      "0001:applied",
      "0002:applied",
      "0003:applied",
    ]);
    await db.sql`drop table managed_migrations, posts, users`;
    const failing = await runCli([
      "--dir",
      fixture("failing"),
      "migrate",
      "--no-backup",
      "--single-transaction",
    ], { env });
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /nothing was applied/);
    assert.deepEqual(await history(db.sql), []);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "seed_history",
    ]);
  },
);

pgTest(
  "seed applies each seed once, refuses a changed seed (exit 4) unless --rerun-changed",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const { dir, remove } = await makeDbDir({
      "1_c.up.sql": "CREATE TABLE colors (name text PRIMARY KEY);\n",
      "1_c.down.sql": "DROP TABLE colors;\n",
    });
    await Deno.mkdir(`${dir}/managed-seeds`);
    await Deno.writeTextFile(
      `${dir}/managed-seeds/001_red.sql`,
      "INSERT INTO colors VALUES ('red');\n",
    );
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    const dry = await runCli(["--dir", dir, "seed", "--dry-run"], { env });
    assert.equal(dry.code, 0);
    assert.equal((await db.sql`select count(*)::int as n from colors`)[0].n, 0);
    const first = await runCli(["--dir", dir, "--json", "seed"], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(
      (first.json as { seeded: { name: string }[] }).seeded.map((s) => s.name),
      ["001_red"],
    );
    const second = await runCli(["--dir", dir, "seed"], { env });
    assert.equal(second.code, 0, second.stderr);
    assert.equal((await db.sql`select count(*)::int as n from colors`)[0].n, 1);

    await Deno.writeTextFile(
      `${dir}/managed-seeds/001_red.sql`,
      "INSERT INTO colors VALUES ('crimson');\n",
    );
    const changed = await runCli(["--dir", dir, "seed"], { env });
    assert.equal(changed.code, 4);
    assert.match(changed.stderr, /--rerun-changed/);
    const rerun = await runCli(["--dir", dir, "seed", "--rerun-changed"], {
      env,
    });
    assert.equal(rerun.code, 0, rerun.stderr);
    const names = await db.sql`select name from colors order by 1`;
    assert.deepEqual(names.map((n) => n.name), ["crimson", "red"]);

    await Deno.writeTextFile(
      `${dir}/managed-seeds/002_bad.sql`,
      "INSERT INTO colors VALUES ('red');\n",
    );
    const bad = await runCli(["--dir", dir, "seed"], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Cannot apply seed "002_bad"/);
    const seeds = await db.sql`select name from seed_history order by 1`;
    assert.deepEqual(seeds.map((s) => s.name), ["001_red"]);
    await remove();
  },
);

pgTest(
  "status shows states and --check exits 5 only with pending work",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const dir = fixture("seeds");
    const before = await runCli(["--dir", dir, "--json", "status", "--check"], {
      env,
    });
    assert.equal(before.code, 5);
    const doc = before.json as {
      migrations: { version: string; state: string }[];
      seeds: { name: string; state: string }[];
    };
    assert.deepEqual(doc.migrations.map((m) => m.state), ["pending"]);
    assert.deepEqual(doc.seeds.map((s) => s.state), ["pending", "pending"]);
    assert.deepEqual(
      await tables(db.sql),
      [],
      "status must not create history tables",
    );
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    assert.equal((await runCli(["--dir", dir, "seed"], { env })).code, 0);
    const after = await runCli(["--dir", dir, "status", "--check"], { env });
    assert.equal(after.code, 0, after.stderr);
    assert.match(after.stdout, /0001\s+colors\s+applied/);
  },
);

pgTest(
  "baseline records migrations as applied without running them",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const r = await runCli([
      "--dir",
      fixture("basic"),
      "baseline",
      "--to",
      "0002",
    ], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await history(db.sql), ["0001:applied", "0002:applied"]);
    assert.deepEqual(await tables(db.sql), [
      "managed_migrations",
      "seed_history",
    ]);
  },
  { versions: [15] },
);

pgTest(
  "the advisory lock makes a second runner wait, then find nothing to do",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const holder = await db.sql.reserve();
    const { lockKey } = await import("../src/db/lock.ts");
    const { historyTables } = await import("../src/db/history.ts");
    const key = await lockKey(historyTables("public"));
    await holder`select pg_advisory_lock(${key.toString()}::bigint)`;
    const waiting = await runCli([
      "--dir",
      fixture("basic"),
      "migrate",
      "--no-backup",
      "--wait-timeout",
      "1s",
    ], { env });
    assert.equal(waiting.code, 1);
    assert.match(waiting.stderr, /Waiting for another managed-migrate/);
    assert.match(waiting.stderr, /still holds the migration lock after 1\.0s/);
    await holder`select pg_advisory_unlock(${key.toString()}::bigint)`;
    holder.release();
  },
);

pgTest(
  "--history-schema keeps the history tables in that schema",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const r = await runCli([
      "--dir",
      fixture("basic"),
      "--history-schema",
      "ops",
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(r.code, 0, r.stderr);
    const rows = await db.sql`
    select table_schema, table_name from information_schema.tables
     where table_name in ('managed_migrations', 'seed_history') order by 2`;
    assert.deepEqual(rows.map((x) => `${x.table_schema}.${x.table_name}`), [
      "ops.managed_migrations",
      "ops.seed_history",
    ]);
    const status = await runCli([
      "--dir",
      fixture("basic"),
      "--history-schema",
      "ops",
      "status",
      "--check",
    ], { env });
    assert.equal(status.code, 0, status.stderr);
    const other = await runCli(
      ["--dir", fixture("basic"), "status", "--check"],
      { env },
    );
    assert.equal(other.code, 5, "the default schema has no history yet");
  },
);

pgTest(
  "a pending migration older than the newest applied one runs, with a warning",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const { dir, write, remove } = await makeDbDir();
    await write("2_b.up.sql", "CREATE TABLE b (id int);\n");
    await write("2_b.down.sql", "DROP TABLE b;\n");
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    await write("1_a.up.sql", "CREATE TABLE a (id int);\n");
    await write("1_a.down.sql", "DROP TABLE a;\n");
    const r = await runCli(["--dir", dir, "migrate", "--no-backup"], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /"1_a" is older than the applied "2_b": applying it out of order/,
    );
    assert.deepEqual(await history(db.sql), ["1:applied", "2:applied"]);
    await remove();
  },
  { versions: [15] },
);

pgTest(
  "a pending DROP TABLE makes migrate exit 3 and change nothing; with ALLOW_BREAKING_MIGRATIONS=true it applies",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const { dir, write, remove } = await makeDbDir();
    await write("1_a.up.sql", "CREATE TABLE a (id int);\n");
    await write("1_a.down.sql", "DROP TABLE a;\n");
    assert.equal(
      (await runCli(["--dir", dir, "migrate", "--no-backup"], { env })).code,
      0,
    );
    await write(
      "2_drop.up.sql",
      "-- comments and strings never fire: DROP TABLE b;\nSELECT 'DROP TABLE a';\nDROP TABLE a;\n",
    );
    await write("2_drop.down.sql", "CREATE TABLE a (id int);\n");
    const backupPath = `${dir}/before.sql`;
    const refused = await runCli([
      "--dir",
      dir,
      "--json",
      "migrate",
      "--backup-path",
      backupPath,
    ], { env });
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /drop-table at .*2_drop\.up\.sql:3:1/);
    const error = (refused.json as {
      error: { code: number; findings: { rule: string; line: number }[] };
    }).error;
    assert.equal(error.code, 3);
    assert.deepEqual(error.findings.map((f) => [f.rule, f.line]), [[
      "drop-table",
      3,
    ]]);
    assert.equal(
      await db.sql`select to_regclass('a') is not null as ok`.then((r) =>
        r[0].ok
      ),
      true,
    );
    assert.deepEqual(await history(db.sql), ["1:applied"]);
    await assert.rejects(
      Deno.stat(backupPath),
      Deno.errors.NotFound,
      "no backup is taken before a refusal",
    );

    const allowed = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env: { ...env, ALLOW_BREAKING_MIGRATIONS: "true" },
    });
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stderr, /\[drop-table\] \(allowed\)/);
    assert.equal(
      await db.sql`select to_regclass('a') is null as gone`.then((r) =>
        r[0].gone
      ),
      true,
    );
    await remove();
  },
);
