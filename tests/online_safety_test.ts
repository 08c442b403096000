/**
 * Lock timeouts with retries, blocker diagnosis, waiting without queueing,
 * interrupts and crashes, on a real server (issue: online safety).
 */
import assert from "node:assert/strict";
import { pgTest, type TestDb } from "./helpers/postgres.ts";
import { makeDbDir } from "./helpers/db_dir.ts";
import { runCli } from "./helpers/cli.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

async function makeDir(files: Record<string, string>): Promise<string> {
  return (await makeDbDir(files)).dir;
}

/**
 * A session that reads `accounts` in an open transaction: it holds an
 * AccessShareLock, which every ALTER TABLE conflicts with.
 */
async function holdAccounts(sql: TestDb["sql"], applicationName?: string) {
  const blocker = await sql.reserve();
  if (applicationName) {
    await blocker.unsafe(`set application_name = '${applicationName}'`);
  }
  await blocker`begin`;
  await blocker`select * from accounts`;
  const [{ pid }] = await blocker`select pg_backend_pid() as pid`;
  return {
    pid: Number(pid),
    release: async () => {
      await blocker`rollback`;
      blocker.release();
    },
  };
}

/** Starts main.ts as a child we can signal. */
function spawnCli(args: string[], env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "--config", CONFIG, MAIN, ...args],
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

pgTest(
  "a visible long blocker makes migrate wait without queueing, then fail naming its pid",
  async (db) => {
    await db.sql`create table accounts (id int primary key)`;
    const dir = await makeDir({
      "1_add.up.sql": "ALTER TABLE accounts ADD COLUMN note text;\n",
      "1_add.down.sql":
        "-- managed-migrate: allow=drop-column\nALTER TABLE accounts DROP COLUMN note;\n",
    });
    const blocker = await holdAccounts(db.sql);
    const { pid } = blocker;
    const started = Date.now();
    const r = await runCli(
      [
        "--dir",
        dir,
        "--json",
        "migrate",
        "--no-backup",
        "--lock-timeout",
        "1s",
        "--lock-retries",
        "2",
      ],
      { env: { DATABASE_URL: db.url } },
    );
    const elapsed = Date.now() - started;
    await blocker.release();
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pid ${pid}\\b`));
    assert.match(r.stderr, /Waiting before "1_add" without queueing/);
    const err = (r.json as { error: { blockers: { pid: number }[] } }).error;
    assert.equal(err.blockers[0].pid, pid);
    // The wait is bounded by what the retries would take: 1s + 2 × (1s + backoff).
    assert.ok(elapsed < 12_000, `took ${elapsed}ms`);
    const cols = await db
      .sql`select column_name from information_schema.columns where table_name = 'accounts'`;
    assert.deepEqual(cols.map((c) => c.column_name), ["id"]);
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "migrate waits for a visible blocker and applies as soon as it ends",
  async (db) => {
    await db.sql`create table accounts (id int primary key)`;
    const dir = await makeDir({
      "1_add.up.sql": "ALTER TABLE accounts ADD COLUMN note text;\n",
      "1_add.down.sql":
        "-- managed-migrate: allow=drop-column\nALTER TABLE accounts DROP COLUMN note;\n",
    });
    const blocker = await holdAccounts(db.sql);
    const child = spawnCli([
      "--dir",
      dir,
      "migrate",
      "--no-backup",
      "--lock-timeout",
      "1s",
      "--lock-retries",
      "3",
    ], {
      DATABASE_URL: db.url,
    });
    await new Promise((r) => setTimeout(r, 1500));
    // While we wait without queueing, the application's reads are not blocked.
    const probe = await db.sql.reserve();
    await probe`set statement_timeout = '200ms'`;
    await probe`select count(*) from accounts`;
    probe.release();
    const released = Date.now();
    await blocker.release();
    const out = await child.output();
    const afterRelease = Date.now() - released;
    assert.equal(out.code, 0, decode(out.stderr));
    assert.ok(
      afterRelease < 2000,
      `applied ${afterRelease}ms after the blocker ended`,
    );
    const cols = await db
      .sql`select column_name from information_schema.columns where table_name = 'accounts' order by 1`;
    assert.deepEqual(cols.map((c) => c.column_name), ["id", "note"]);
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "a lock timeout the pre-check cannot see is retried, and the run succeeds once the blocker ends",
  async (db) => {
    await db.sql`create table accounts (id int primary key)`;
    // Dynamic SQL hides the table from the parser, so only lock_timeout protects it.
    const dir = await makeDir({
      "1_add.up.sql":
        "-- managed-migrate: allow=dynamic-sql\nDO $$ BEGIN EXECUTE 'ALTER TABLE accounts ADD COLUMN note text'; END $$;\n",
      "1_add.down.sql": "ALTER TABLE accounts DROP COLUMN note;\n",
    });
    const blocker = await holdAccounts(db.sql);
    const { pid } = blocker;
    const child = spawnCli(
      [
        "--dir",
        dir,
        "migrate",
        "--no-backup",
        "--lock-timeout",
        "300ms",
        "--lock-retries",
        "6",
      ],
      { DATABASE_URL: db.url },
    );
    await new Promise((r) => setTimeout(r, 1500));
    await blocker.release();
    const out = await child.output();
    const stderr = decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /Lock timeout on "1_add" \(attempt 1\); retrying/);
    assert.match(stderr, new RegExp(`blocked by pid ${pid}\\b`));
    const [row] = await db
      .sql`select count(*)::int as n from managed_migrations`;
    assert.equal(row.n, 1);
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "after the last retry, a hidden blocker is named from pg_blocking_pids",
  async (db) => {
    await db.sql`create table accounts (id int primary key)`;
    const dir = await makeDir({
      "1_add.up.sql":
        "-- managed-migrate: allow=dynamic-sql\nDO $$ BEGIN EXECUTE 'ALTER TABLE accounts ADD COLUMN note text'; END $$;\n",
      "1_add.down.sql": "ALTER TABLE accounts DROP COLUMN note;\n",
    });
    const blocker = await holdAccounts(db.sql, "report-job");
    const { pid } = blocker;
    const r = await runCli([
      "--dir",
      dir,
      "migrate",
      "--no-backup",
      "--lock-timeout",
      "500ms",
      "--lock-retries",
      "1",
    ], {
      env: { DATABASE_URL: db.url },
    });
    await blocker.release();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /lock_timeout of 500ms exceeded 2 times/);
    assert.match(r.stderr, new RegExp(`pid ${pid} \\(report-job`));
    assert.equal(
      (await db.sql`select count(*)::int as n from managed_migrations`)[0].n,
      0,
    );
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "SIGINT mid-migration cancels the statement, rolls back, frees the lock and exits 130",
  async (db) => {
    const dir = await makeDir({
      "1_a.up.sql": "CREATE TABLE a (id int);\n",
      "1_a.down.sql": "DROP TABLE a;\n",
      "2_slow.up.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n",
      "2_slow.down.sql": "DROP TABLE slow;\n",
    });
    const child = spawnCli(["--dir", dir, "migrate", "--no-backup"], {
      DATABASE_URL: db.url,
    });
    // Wait until the slow statement runs.
    for (let i = 0; i < 100; i++) {
      const rows = await db
        .sql`select 1 from pg_stat_activity where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()`;
      if (rows.length > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const sent = Date.now();
    child.kill("SIGINT");
    const out = await child.output();
    const exitMs = Date.now() - sent;
    const stderr = decode(out.stderr);
    assert.equal(out.code, 130, stderr);
    assert.ok(exitMs < 5000, `exited ${exitMs}ms after SIGINT`);
    assert.match(stderr, /applied before it: 1_a/);
    const { lockKey } = await import("../src/db/lock.ts");
    const { historyTables } = await import("../src/db/history.ts");
    const key = (await lockKey(historyTables("public"))).toString();
    const [lock] = await db
      .sql`select pg_try_advisory_lock(${key}::bigint) as ok`;
    assert.equal(lock.ok, true, "the advisory lock is free at once");
    await db.sql`select pg_advisory_unlock(${key}::bigint)`;
    const rows = await db
      .sql`select version from managed_migrations order by 1`;
    assert.deepEqual(rows.map((r) => r.version), ["1"]);
    assert.equal((await db.sql`select to_regclass('slow') as t`)[0].t, null);
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "four concurrent migrate runs apply each migration exactly once, with CREATE INDEX CONCURRENTLY",
  async (db) => {
    const files: Record<string, string> = {
      "1_t.up.sql":
        "CREATE TABLE t (id int primary key, v int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 20000) g;\n",
      "1_t.down.sql": "DROP TABLE t;\n",
      "2_idx.up.sql":
        "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY t_v_idx ON t (v);\n",
      "2_idx.down.sql":
        "-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY t_v_idx;\n",
    };
    for (let i = 3; i <= 12; i++) {
      files[`${i}_c${i}.up.sql`] =
        `CREATE TABLE c${i} (id int);\nINSERT INTO runs VALUES (${i});\n`;
      files[`${i}_c${i}.down.sql`] = `DROP TABLE c${i};\n`;
    }
    await db.sql`create table runs (v int)`;
    const dir = await makeDir(files);
    const children = Array.from(
      { length: 4 },
      () =>
        spawnCli(["--dir", dir, "--json", "migrate", "--no-backup"], {
          DATABASE_URL: db.url,
        }),
    );
    const outs = await Promise.all(children.map((c) => c.output()));
    for (const o of outs) assert.equal(o.code, 0, decode(o.stderr));
    const applied = outs.flatMap((o) =>
      (JSON.parse(decode(o.stdout)) as { applied: { version: string }[] })
        .applied.map((a) => a.version)
    );
    assert.equal(applied.length, 12, `applied: ${applied.join(",")}`);
    assert.equal(new Set(applied).size, 12);
    const [runs] = await db
      .sql`select count(*)::int as n, count(distinct v)::int as d from runs`;
    assert.deepEqual([runs.n, runs.d], [10, 10]);
    const [idx] = await db
      .sql`select indisvalid from pg_index where indexrelid = 't_v_idx'::regclass`;
    assert.equal(idx.indisvalid, true);
    await Deno.remove(dir, { recursive: true });
  },
);

pgTest(
  "SIGKILL at random moments leaves history and schema consistent, and a rerun finishes",
  async (db) => {
    const files: Record<string, string> = {};
    for (let i = 1; i <= 8; i++) {
      files[`${i}_m${i}.up.sql`] =
        `CREATE TABLE m${i} (id int);\nSELECT pg_sleep(0.05);\n`;
      files[`${i}_m${i}.down.sql`] = `DROP TABLE m${i};\n`;
    }
    files["9_idx.up.sql"] =
      "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS m1_id_idx ON m1 (id);\nSELECT pg_sleep(0.05);\n";
    files["9_idx.down.sql"] =
      "-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS m1_id_idx;\n";
    const dir = await makeDir(files);
    const env = { DATABASE_URL: db.url };
    for (let round = 0; round < 20; round++) {
      const child = spawnCli(["--dir", dir, "migrate", "--no-backup"], env);
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 700));
      try {
        child.kill("SIGKILL");
      } catch { /* already finished */ }
      await child.output();
      // The killed session's backend ends on its own; wait for its lock to go.
      await db.sql`select pg_sleep(0.05)`;
      const history = await db.sql`
      select version, state from managed_migrations order by version::int`
        .catch(() => []);
      const tables = new Set(
        (await db
          .sql`select tablename from pg_tables where schemaname = 'public' and tablename ~ '^m[0-9]+$'`)
          .map((t) => t.tablename as string),
      );
      for (const h of history) {
        if (h.version === "9") continue;
        assert.ok(
          tables.has(`m${h.version}`),
          `history says ${h.version} applied but its table is missing`,
        );
      }
      for (const t of tables) {
        assert.ok(
          history.some((h) => `m${h.version}` === t),
          `table ${t} exists without its history row`,
        );
      }
      const running = history.find((h) => h.state === "running");
      if (running) {
        // An interrupted no-transaction migration: the operator checks, then repairs.
        assert.equal(running.version, "9");
        const r = await runCli(["--dir", dir, "migrate", "--no-backup"], {
          env,
        });
        assert.equal(r.code, 4);
        assert.match(r.stderr, /repair 9/);
        assert.equal(
          (await runCli(["--dir", dir, "repair", "9", "--rolled-back"], {
            env,
          })).code,
          0,
        );
      }
      const finish = await runCli(["--dir", dir, "migrate", "--no-backup"], {
        env,
      });
      assert.equal(finish.code, 0, finish.stderr);
      if (round % 2 === 0) {
        const back = await runCli([
          "--dir",
          dir,
          "rollback",
          "--no-backup",
          "--steps",
          "9",
        ], { env });
        assert.equal(back.code, 0, back.stderr);
      }
    }
    await Deno.remove(dir, { recursive: true });
  },
  { versions: [15] },
);

Deno.test("a server restart mid-run is one clear line (exit 1), history stays consistent, and a rerun completes", async () => {
  const { startEphemeralServer } = await import(
    "../src/pg_server/ephemeral.ts"
  );
  const server = await startEphemeralServer({});
  try {
    const files: Record<string, string> = {};
    for (let i = 1; i <= 12; i++) {
      files[`${i}_m${i}.up.sql`] =
        `CREATE TABLE m${i} (id int);\nSELECT pg_sleep(0.2);\n`;
      files[`${i}_m${i}.down.sql`] = `DROP TABLE m${i};\n`;
    }
    const dir = await makeDir(files);
    const env = { DATABASE_URL: server.url };
    const child = spawnCli(["--dir", dir, "migrate", "--no-backup"], env);
    await new Promise((r) => setTimeout(r, 1200));
    await server.restart();
    const out = await child.output();
    const stderr = decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    const errorLines = stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.equal(errorLines.length, 1, stderr);
    assert.match(errorLines[0], /lost the connection|Database error/);
    assert.doesNotMatch(stderr, /please report|^\s+at /m);

    const sql = (await import("postgres")).default(server.url, {
      max: 1,
      onnotice: () => {},
    });
    const history = (await sql`select version from managed_migrations`).map((
      r,
    ) => Number(r.version));
    const tables =
      (await sql`select tablename from pg_tables where tablename ~ '^m[0-9]+$'`)
        .map((r) => Number(String(r.tablename).slice(1)));
    assert.deepEqual(
      history.sort((a, b) => a - b),
      tables.sort((a, b) => a - b),
    );
    assert.ok(history.length < 12, "the restart interrupted the run");
    const rerun = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env,
    });
    assert.equal(rerun.code, 0, rerun.stderr);
    const [{ n }] =
      await sql`select count(*)::int as n from managed_migrations`;
    assert.equal(n, 12);
    await sql.end();
    await Deno.remove(dir, { recursive: true });
  } finally {
    await server.stop();
  }
});
