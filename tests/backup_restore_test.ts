/**
 * backup and restore on real servers: round trips in both formats, private
 * files, no partial files, no password anywhere, refusals before anything
 * runs. Dump/restore tests run on PostgreSQL 15 only (the only version with
 * pg_dump/psql here); the version refusal uses the 18 server.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { type CliResult, runCli } from "./helpers/cli.ts";
import { pgTest, type TestDb } from "./helpers/postgres.ts";
import { parseConnectionUrl } from "../src/config.ts";
import { historyTables } from "../src/db/history.ts";
import { lockKey } from "../src/db/lock.ts";
import { InterruptedError } from "../src/errors.ts";
import { Reporter } from "../src/output/reporter.ts";
import { backupDatabase } from "../src/pg_tools/dump.ts";
import { restorePrelude, scanBackup } from "../src/pg_tools/restore.ts";
import { snapshotSchema } from "../src/db/snapshot.ts";
import { startEphemeralServer } from "../src/pg_server/ephemeral.ts";

const PG15_BIN = "/usr/lib/postgresql/15/bin";

type Sql = postgres.Sql;

/** Three related tables, an index, a sequence: enough to see a restore miss something. */
async function createFixture(sql: Sql): Promise<void> {
  await sql.unsafe(`
    create table users (
      id serial primary key,
      email text not null unique,
      created_at timestamptz not null default '2024-01-01T00:00:00Z'
    );
    create table orders (
      id serial primary key,
      user_id int not null references users (id),
      amount numeric(10, 2) not null,
      note text
    );
    create index orders_user_idx on orders (user_id);
    create table notes (id int primary key, body text);
    insert into users (email)
      select 'u' || g || '@example.com' from generate_series(1, 500) g;
    insert into orders (user_id, amount, note)
      select 1 + g % 500, g * 1.25, case when g % 7 = 0 then null else 'n' || g end
      from generate_series(1, 3000) g;
    insert into notes select g, repeat('x', g % 50) from generate_series(1, 200) g;
  `);
}

/** Deletes rows, drops a table, alters a column, bumps a sequence. */
async function mutate(sql: Sql): Promise<void> {
  await sql.unsafe(`
    delete from orders where user_id > 400;
    delete from users where id > 400;
    update users set email = upper(email) where id < 10;
    drop table notes;
    alter table orders alter column note type varchar(200);
    select nextval('users_id_seq') from generate_series(1, 50);
  `);
}

/** Ordered checksums of every table, the column types and sequence positions. */
async function snapshot(sql: Sql): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const tables = await sql<{ name: string }[]>`
    select table_name as name from information_schema.tables
     where table_schema = 'public' and table_type = 'BASE TABLE' order by 1`;
  out.tables = tables.map((t) => t.name).join(",");
  for (const { name } of tables) {
    const [row] = await sql.unsafe(
      `select count(*)::text as n,
              md5(coalesce(string_agg(t::text, ',' order by id), '')) as sum
         from "${name}" t`,
    );
    out[`rows:${name}`] = `${row.n}:${row.sum}`;
  }
  const [columns] = await sql`
    select string_agg(table_name || '.' || column_name || ' ' ||
                      data_type || coalesce('(' || character_maximum_length || ')', ''),
                      ', ' order by table_name, ordinal_position) as list
      from information_schema.columns where table_schema = 'public'`;
  out.columns = String(columns.list);
  const [indexes] = await sql`
    select string_agg(indexname, ',' order by indexname) as list
      from pg_indexes where schemaname = 'public'`;
  out.indexes = String(indexes.list);
  const [seq] = await sql`select last_value::text as v from users_id_seq`;
  out.sequence = String(seq.v);
  return out;
}

function cli(
  db: TestDb,
  args: string[],
  extra: Parameters<typeof runCli>[1] = {},
) {
  return runCli(["--database-url", db.url, ...args], extra);
}

/** Exit code plus both streams, for assertion messages. */
function show(r: CliResult): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** The one `error: ...` line a failed run prints, with no stack. */
function assertOneErrorLine(r: CliResult): string {
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, show(r));
  assert.match(lines[0], /^error: /, show(r));
  assert.doesNotMatch(r.stderr, /\s+at .*:\d+:\d+/, "no stack trace");
  return lines[0];
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mm-backup-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

pgTest(
  "backup and restore (.sql) bring back deleted rows, a dropped table and an altered column",
  async (db) => {
    await createFixture(db.sql);
    const before = await snapshot(db.sql);
    await withTempDir(async (dir) => {
      const path = `${dir}/app.sql`;
      const backup = await cli(db, ["--json", "backup", "--backup-path", path]);
      assert.equal(backup.code, 0, show(backup));
      const doc = backup.json as {
        backup: { path: string; bytes: number; durationMs: number };
      };
      assert.equal(doc.backup.path, path);
      assert.equal(doc.backup.bytes, (await Deno.stat(path)).size);
      assert.ok(doc.backup.bytes > 10_000, "the dump holds the data");
      assert.ok(doc.backup.durationMs >= 0);
      assert.equal(await modeOf(path), 0o600);
      assert.deepEqual(await listDir(dir), ["app.sql"], "no temp file left");
      const text = await Deno.readTextFile(path);
      assert.match(
        text,
        /DROP TABLE IF EXISTS public\.orders;/,
        "--clean --if-exists",
      );

      await mutate(db.sql);
      assert.notDeepEqual(await snapshot(db.sql), before);

      const restore = await cli(db, ["restore", "--restore", path, "--yes"]);
      assert.equal(restore.code, 0, show(restore));
      assert.match(restore.stdout, /^Restored ".*app\.sql" into postgres:\/\//);
      assert.deepEqual(await snapshot(db.sql), before);

      // Restoring again is idempotent: --clean --if-exists drops what exists.
      const again = await cli(db, ["restore", path, "--yes"]);
      assert.equal(again.code, 0, show(again));
      assert.deepEqual(await snapshot(db.sql), before);
    });
  },
  { versions: [15] },
);

pgTest(
  "backup and restore (.dump, --pg-bin) bring back deleted rows, a dropped table and an altered column",
  async (db) => {
    await createFixture(db.sql);
    const before = await snapshot(db.sql);
    await withTempDir(async (dir) => {
      const path = `${dir}/app.dump`;
      const backup = await cli(db, [
        "--pg-bin",
        PG15_BIN,
        "backup",
        "--backup-path",
        path,
      ]);
      assert.equal(backup.code, 0, show(backup));
      assert.match(
        backup.stdout,
        /^Backed up postgres:\/\/postgres@127\.0\.0\.1:\d+\/mm_t_\w+ to ".*app\.dump" \(\d+(\.\d)? kB in \d+(\.\d)?m?s\)\n$/,
      );
      const head = new Uint8Array(5);
      const file = await Deno.open(path);
      await file.read(head);
      file.close();
      assert.equal(new TextDecoder().decode(head), "PGDMP", "custom format");
      assert.equal(await modeOf(path), 0o600);

      await mutate(db.sql);
      const restore = await cli(db, [
        "--pg-bin",
        PG15_BIN,
        "restore",
        path,
        "--yes",
      ]);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(await snapshot(db.sql), before);

      const again = await cli(db, [
        "--json",
        "restore",
        "--restore",
        path,
        "-y",
      ]);
      assert.equal(again.code, 0, show(again));
      const doc = again.json as {
        restore: { path: string; durationMs: number };
      };
      assert.equal(doc.restore.path, path);
      assert.deepEqual(await snapshot(db.sql), before);
    });
  },
  { versions: [15] },
);

pgTest(
  "backup without --backup-path writes ./backups/<database>-<UTC timestamp>.sql in a 0700 directory",
  async (db) => {
    await createFixture(db.sql);
    await withTempDir(async (dir) => {
      const r = await cli(db, ["--json", "backup"], { cwd: dir });
      assert.equal(r.code, 0, show(r));
      const { backup } = r.json as { backup: { path: string } };
      const database = new URL(db.url).pathname.slice(1);
      assert.match(
        backup.path,
        new RegExp(`^backups/${database}-\\d{8}T\\d{6}Z\\.sql$`),
      );
      assert.equal(await modeOf(`${dir}/backups`), 0o700);
      assert.equal(await modeOf(`${dir}/${backup.path}`), 0o600);
      assert.deepEqual(await listDir(`${dir}/backups`), [
        backup.path.slice("backups/".length),
      ]);
    });
  },
  { versions: [15] },
);

pgTest(
  "backup refuses a pg_dump older than the server up front, naming the fix",
  async (db) => {
    await withTempDir(async (dir) => {
      const path = `${dir}/app.sql`;
      for (const args of [[], ["--pg-bin", PG15_BIN]]) {
        const r = await cli(db, [...args, "backup", "--backup-path", path]);
        assert.equal(r.code, 1, show(r));
        const line = assertOneErrorLine(r);
        assert.match(
          line,
          /Cannot back up with pg_dump 15 \(".*pg_dump"\): the server runs PostgreSQL 18: install the PostgreSQL 18 client .*--pg-bin/,
        );
        assert.deepEqual(await listDir(dir), [], "nothing written");
      }
    });
  },
  { versions: [18] },
);

pgTest(
  "backup exits 1 with one line when pg_dump is missing from PATH or --pg-bin",
  async (db) => {
    await withTempDir(async (dir) => {
      const empty = `${dir}/empty-bin`;
      await Deno.mkdir(empty);
      const out = `${dir}/out`;
      await Deno.mkdir(out);
      const path = `${out}/app.sql`;

      const viaPath = await cli(db, ["backup", "--backup-path", path], {
        env: { PATH: empty },
        unset: ["PG_BIN"],
      });
      assert.equal(viaPath.code, 1, show(viaPath));
      assert.match(
        assertOneErrorLine(viaPath),
        /^error: Cannot run pg_dump: not found on PATH: install the PostgreSQL client matching the server .*--pg-bin DIR/,
      );

      const viaFlag = await cli(db, [
        "--pg-bin",
        empty,
        "--json",
        "backup",
        "--backup-path",
        path,
      ]);
      assert.equal(viaFlag.code, 1, show(viaFlag));
      assert.match(
        assertOneErrorLine(viaFlag),
        /Cannot run pg_dump: ".*empty-bin\/pg_dump" does not exist or is not executable/,
      );
      const doc = viaFlag.json as { error: { code: number; tool: string } };
      assert.equal(doc.error.code, 1);
      assert.equal(doc.error.tool, "pg_dump");

      const viaEnv = await cli(db, ["backup", "--backup-path", path], {
        env: { PG_BIN: empty },
      });
      assert.equal(viaEnv.code, 1, show(viaEnv));
      assert.match(assertOneErrorLine(viaEnv), /empty-bin\/pg_dump/);
      assert.deepEqual(await listDir(out), [], "nothing written");
    });
  },
  { versions: [15] },
);

pgTest(
  "backup into a missing directory, or to a path of another extension, fails with one clear line",
  async (db) => {
    await withTempDir(async (dir) => {
      const missing = await cli(db, [
        "backup",
        "--backup-path",
        `${dir}/nope/app.sql`,
      ]);
      assert.equal(missing.code, 1, show(missing));
      assert.match(
        assertOneErrorLine(missing),
        /^error: Cannot write backup ".*\/nope\/app\.sql": directory ".*\/nope" does not exist: create it, or choose another --backup-path$/,
      );

      const wrongExt = await cli(db, [
        "backup",
        "--backup-path",
        `${dir}/a.txt`,
      ]);
      assert.equal(wrongExt.code, 2, show(wrongExt));
      assert.match(
        assertOneErrorLine(wrongExt),
        /use a \.sql file .* or a \.dump file/,
      );
    });
  },
  { versions: [15] },
);

/**
 * A read-only directory: a read-only tmpfs mount (root ignores file modes),
 * else mode 0555 for a non-root user. Returns how to undo it, or undefined
 * when neither is possible here.
 */
async function makeReadOnlyDir(
  dir: string,
): Promise<(() => Promise<void>) | undefined> {
  await Deno.mkdir(dir);
  if (Deno.uid() !== 0) {
    await Deno.chmod(dir, 0o555);
    return () => Deno.chmod(dir, 0o755);
  }
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => ({ success: false }));
  if (!mount.success) return undefined;
  return async () => {
    await new Deno.Command("umount", { args: [dir] }).output();
  };
}

const READ_ONLY_PROBE = await Deno.makeTempDir({ prefix: "mm-ro-probe-" });
const undoProbe = await makeReadOnlyDir(`${READ_ONLY_PROBE}/ro`);
await undoProbe?.();
await Deno.remove(READ_ONLY_PROBE, { recursive: true });

if (undoProbe) {
  pgTest(
    "backup into a read-only directory exits 1 with one clear line",
    async (db) => {
      await withTempDir(async (dir) => {
        const ro = `${dir}/ro`;
        const undo = (await makeReadOnlyDir(ro))!;
        try {
          const r = await cli(db, ["backup", "--backup-path", `${ro}/app.sql`]);
          assert.equal(r.code, 1, show(r));
          assert.match(
            assertOneErrorLine(r),
            /^error: Cannot write backup ".*\/ro\/app\.sql": directory ".*\/ro" is not writable \(.*\): choose another --backup-path$/,
          );
          assert.deepEqual(await listDir(ro), []);
        } finally {
          await undo();
        }
      });
    },
    { versions: [15] },
  );
} else {
  Deno.test({
    name:
      "backup into a read-only directory exits 1 with one clear line [skipped: running as root without permission to mount a read-only tmpfs]",
    ignore: true,
    fn: () => {},
  });
}

pgTest(
  "backupDatabase() interrupted by its signal stops pg_dump and leaves no partial file",
  async (db) => {
    await db.sql`create table big (id int primary key)`;
    await withTempDir(async (dir) => {
      const controller = new AbortController();
      const reporter = new Reporter({ json: true, quiet: true, color: false });
      const locker = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        let dump: Promise<unknown> | undefined;
        await locker.begin(async (tx) => {
          // pg_dump waits for this lock with its temp file already open.
          await tx`lock table big in access exclusive mode`;
          dump = backupDatabase({
            info: parseConnectionUrl(db.url),
            path: `${dir}/app.sql`,
            reporter,
            signal: controller.signal,
          });
          dump.catch(() => {});
          await waitFor(async () => (await listDir(dir)).length === 1);
          assert.match((await listDir(dir))[0], /^\.app\.sql\.\w+\.tmp$/);
          assert.equal(
            await modeOf(`${dir}/${(await listDir(dir))[0]}`),
            0o600,
          );
          controller.abort(new InterruptedError());
          await assert.rejects(dump, InterruptedError);
        });
        assert.deepEqual(await listDir(dir), [], "temp file removed");
      } finally {
        await locker.end();
      }
    });
  },
  { versions: [15] },
);

pgTest(
  "restore without --yes and without a terminal exits 2 and touches nothing",
  async (db) => {
    await createFixture(db.sql);
    await withTempDir(async (dir) => {
      const path = `${dir}/app.dump`;
      assert.equal((await cli(db, ["backup", "--backup-path", path])).code, 0);
      await mutate(db.sql);
      const mutated = await snapshot(db.sql);
      const r = await cli(db, ["restore", path]);
      assert.equal(r.code, 2, show(r));
      assert.match(
        assertOneErrorLine(r),
        /^error: Refusing to restore ".*app\.dump" into postgres:\/\/postgres@.*: no terminal to ask on, pass --yes$/,
      );
      assert.deepEqual(await snapshot(db.sql), mutated);
    });
  },
  { versions: [15] },
);

pgTest(
  "restore of a corrupt, truncated, missing or misnamed file changes nothing and says why",
  async (db) => {
    await createFixture(db.sql);
    await withTempDir(async (dir) => {
      const good = `${dir}/good.dump`;
      const goodSql = `${dir}/good.sql`;
      assert.equal((await cli(db, ["backup", "--backup-path", good])).code, 0);
      assert.equal(
        (await cli(db, ["backup", "--backup-path", goodSql])).code,
        0,
      );
      await mutate(db.sql);
      const mutated = await snapshot(db.sql);

      const garbage = `${dir}/garbage.dump`;
      await Deno.writeTextFile(garbage, "this is not an archive\n");
      const bytes = await Deno.readFile(good);
      // A valid header with the data cut off: pg_restore starts, then fails.
      const truncated = `${dir}/truncated.dump`;
      await Deno.writeFile(
        truncated,
        bytes.subarray(0, Math.floor(bytes.length * 0.6)),
      );
      // Plain SQL that fails halfway: the first half must be rolled back.
      const halfSql = `${dir}/half.sql`;
      const text = await Deno.readTextFile(goodSql);
      await Deno.writeTextFile(
        halfSql,
        text.replace(
          /CREATE TABLE public\.orders/,
          "CREATE TABLE public.orders_typo ( x nosuchtype );\nCREATE TABLE public.orders",
        ),
      );
      const renamed = `${dir}/archive.sql`;
      await Deno.writeFile(renamed, bytes);

      const cases: [string, string[], number, RegExp][] = [
        [
          garbage,
          [],
          1,
          /Cannot restore ".*garbage\.dump": not a pg_dump custom-format archive/,
        ],
        [
          truncated,
          [],
          1,
          /Cannot restore ".*truncated\.dump" into database "mm_t_\w+" \(nothing was changed\): pg_restore exited with code 1: pg_restore: error: /,
        ],
        [
          halfSql,
          [],
          1,
          /Cannot restore ".*half\.sql" into database "mm_t_\w+" \(nothing was changed\): psql exited with code 3: .*ERROR: +type "nosuchtype" does not exist/,
        ],
        [
          `${dir}/missing.sql`,
          [],
          1,
          /Cannot restore ".*missing\.sql": the file does not exist$/,
        ],
        [
          renamed,
          [],
          1,
          /Cannot restore ".*archive\.sql": this is a pg_dump custom-format archive, not plain SQL: rename it to \.dump$/,
        ],
        [
          `${dir}/x.tar`,
          [],
          2,
          /Invalid backup path ".*x\.tar": use a \.sql file/,
        ],
      ];
      for (const [path, extra, code, message] of cases) {
        const r = await cli(db, [
          "restore",
          "--restore",
          path,
          "--yes",
          ...extra,
        ]);
        assert.equal(r.code, code, `${path}: ${show(r)}`);
        assert.match(assertOneErrorLine(r), message);
        assert.deepEqual(
          await snapshot(db.sql),
          mutated,
          `${path} changed nothing`,
        );
      }

      const both = await cli(db, ["restore", "--restore", good, good, "--yes"]);
      assert.equal(both.code, 2, show(both));
      assert.match(assertOneErrorLine(both), /pass the backup file once/);
      const none = await cli(db, ["restore", "--yes"]);
      assert.equal(none.code, 2, show(none));
      assert.match(assertOneErrorLine(none), /Missing the backup file/);
      assert.deepEqual(await snapshot(db.sql), mutated);
    });
  },
  { versions: [15] },
);

/** Polls `check` every 20ms until it returns true (fails after `ms`). */
async function waitFor(
  check: () => Promise<boolean>,
  ms = 20_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Runs `fn` while another session holds a lock on table `big`; the lock is
 * released when `fn` returns (return promises wrapped in an object, or the
 * transaction would wait for them).
 */
async function whileLocked<T>(
  url: string,
  mode: string,
  fn: () => Promise<T>,
): Promise<T> {
  const holder = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await holder.begin(async (tx) => {
      await tx.unsafe(`lock table big in ${mode} mode`);
      return await fn();
    }) as T;
  } finally {
    await holder.end();
  }
}

/** Every running process's argv (pid → argv joined by spaces). */
async function allCmdlines(): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const raw = await Deno.readFile(`/proc/${entry.name}/cmdline`);
      out.set(
        Number(entry.name),
        new TextDecoder().decode(raw).replaceAll("\0", " ").trimEnd(),
      );
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

/** Waits for a running `tool` whose argv mentions `marker`; returns every argv seen then. */
async function catchTool(
  tool: string,
  marker: string,
): Promise<{ argv: string; all: Map<number, string> }> {
  let found: { argv: string; all: Map<number, string> } | undefined;
  await waitFor(async () => {
    const all = await allCmdlines();
    for (const argv of all.values()) {
      if (argv.split(" ")[0].endsWith(`/${tool}`) && argv.includes(marker)) {
        found = { argv, all };
        return true;
      }
    }
    return false;
  });
  return found!;
}

Deno.test(
  "backup and restore with a scram password in the URL never show it: output, JSON, errors, children's argv",
  async () => {
    const server = await startEphemeralServer({ binDir: PG15_BIN });
    const password = `s3cr3t:P@ss/${crypto.randomUUID().slice(0, 8)}`;
    const encoded = encodeURIComponent(password);
    const su = postgres(server.url, { max: 1, onnotice: () => {} });
    try {
      await su.unsafe(`set password_encryption = 'scram-sha-256'`);
      await su.unsafe(`create role app login password '${password}'`);
      await su.unsafe(`create database appdb owner app`);
      // Password auth on loopback for everyone but the harness superuser.
      const [{ data_directory: dataDir }] = await su`show data_directory`;
      await Deno.writeTextFile(
        `${dataDir}/pg_hba.conf`,
        [
          "local all all trust",
          "host all postgres 127.0.0.1/32 trust",
          "host all all 127.0.0.1/32 scram-sha-256",
          "",
        ].join("\n"),
      );
      await su`select pg_reload_conf()`;
      const [{ rolpassword }] =
        await su`select rolpassword from pg_authid where rolname = 'app'`;
      assert.match(String(rolpassword), /^SCRAM-SHA-256\$/);

      const appUrl = `postgres://app:${encoded}@127.0.0.1:${server.port}/appdb`;
      const app = postgres(appUrl, { max: 1, onnotice: () => {} });
      await app.unsafe(`create table big (id int primary key, body text);
        insert into big select g, md5(g::text) from generate_series(1, 5000) g`);
      const before =
        await app`select md5(string_agg(b::text, ',' order by id)) as s from big b`;
      // Without the password the server must refuse: auth is really on.
      const noPassword = await runCli([
        "--database-url",
        `postgres://app@127.0.0.1:${server.port}/appdb`,
        "backup",
        "--backup-path",
        "/tmp/never.sql",
      ], { unset: ["PGPASSWORD"] });
      assert.equal(noPassword.code, 1, show(noPassword));
      assert.match(noPassword.stderr, /password/);

      const env = { DATABASE_URL: appUrl };
      const holderUrl = `postgres://postgres@127.0.0.1:${server.port}/appdb`;
      const outputs: CliResult[] = [];
      const assertNoArgvLeak = (all: Map<number, string>) => {
        for (const [pid, argv] of all) {
          assert.ok(
            !argv.includes(password) && !argv.includes(encoded),
            `argv of pid ${pid} holds the password: ${argv}`,
          );
        }
      };
      await withTempDir(async (dir) => {
        const path = `${dir}/app.sql`;
        // A lock held elsewhere keeps pg_dump waiting while its argv is sampled.
        const dump = await whileLocked(
          holderUrl,
          "access exclusive",
          async () => {
            const run = runCli(["--json", "backup", "--backup-path", path], {
              env,
            });
            const seen = await catchTool("pg_dump", dir);
            assertNoArgvLeak(seen.all);
            return { run, argv: seen.argv };
          },
        );
        const backup = await dump.run;
        outputs.push(backup);
        assert.equal(backup.code, 0, show(backup));
        assert.match(
          dump.argv,
          /pg_dump --no-password --format=plain --clean --if-exists --file=\S+$/,
        );
        assert.equal(await modeOf(path), 0o600);

        await app.unsafe(`delete from big where id % 2 = 0`);
        // psql's DROP TABLE waits for this share lock: sample its argv meanwhile.
        const load = await whileLocked(holderUrl, "access share", async () => {
          const run = runCli(["--json", "restore", path, "--yes"], { env });
          const seen = await catchTool("psql", dir);
          assertNoArgvLeak(seen.all);
          return { run, argv: seen.argv };
        });
        const restore = await load.run;
        outputs.push(restore);
        assert.equal(restore.code, 0, show(restore));
        assert.match(
          load.argv,
          /psql -X --quiet --no-password --set=ON_ERROR_STOP=1 --single-transaction --command=SET LOCAL client_min_messages = warning;[\s\S]* --file=\S+$/,
        );
        const after =
          await app`select md5(string_agg(b::text, ',' order by id)) as s from big b`;
        assert.equal(after[0].s, before[0].s);

        // Failures print the URL too: it must be masked there as well.
        await Deno.writeTextFile(
          `${dir}/bad.sql`,
          // pg_dump's final line, so the file reaches psql and fails there.
          "select 1;\nselect nosuchcolumn from big;\n-- PostgreSQL database dump complete\n",
        );
        const bad = await runCli([
          "--json",
          "restore",
          `${dir}/bad.sql`,
          "--yes",
        ], { env });
        outputs.push(bad);
        assert.equal(bad.code, 1, show(bad));
        const noConfirm = await runCli(["restore", path], { env });
        outputs.push(noConfirm);
        assert.equal(noConfirm.code, 2, show(noConfirm));
        assert.match(noConfirm.stderr, /postgres:\/\/app:\*\*\*@127\.0\.0\.1/);
        const wrong = await runCli([
          "--json",
          "backup",
          "--backup-path",
          `${dir}/w.sql`,
        ], {
          env: {
            DATABASE_URL:
              `postgres://app:${encoded}x@127.0.0.1:${server.port}/appdb`,
          },
        });
        outputs.push(wrong);
        assert.equal(wrong.code, 1, show(wrong));
        assert.match(
          wrong.stderr,
          /password authentication failed for user "app"/,
        );
        await app.end();
      });
      for (const r of outputs) {
        for (
          const text of [r.stdout, r.stderr, JSON.stringify(r.json ?? null)]
        ) {
          assert.ok(!text.includes(password), `password leaked: ${text}`);
          assert.ok(
            !text.includes(encoded),
            `encoded password leaked: ${text}`,
          );
        }
      }
    } finally {
      await su.end();
      await server.stop();
    }
  },
);

const HAS_SCRIPT = await new Deno.Command("script", { args: ["--version"] })
  .output().then((o) => o.success, () => false);

/**
 * Runs main.ts on a pseudo-terminal (util-linux `script`), answers the first
 * `(y/N)` prompt with `answer`, and returns the exit code and the output.
 */
async function runOnTerminal(
  args: string[],
  answer: string,
): Promise<{ code: number; output: string }> {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const command = [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    "--config",
    config,
    main,
    ...args,
  ]
    .map(quote).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qec", `stty cols 200 rows 40; exec ${command}`, "/dev/null"],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  let output = "";
  let answered = false;
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    output += decoder.decode(chunk, { stream: true });
    if (!answered && output.includes("(y/N)")) {
      answered = true;
      await writer.write(new TextEncoder().encode(answer));
      await new Promise((r) => setTimeout(r, 100));
      await writer.write(new TextEncoder().encode("\r"));
    }
  }
  const status = await child.status;
  await writer.close().catch(() => {});
  return { code: status.code, output };
}

if (HAS_SCRIPT) {
  pgTest(
    "restore asks for confirmation on a terminal: no leaves the database alone, yes restores",
    async (db) => {
      await createFixture(db.sql);
      const before = await snapshot(db.sql);
      await withTempDir(async (dir) => {
        const path = `${dir}/app.dump`;
        assert.equal(
          (await cli(db, ["backup", "--backup-path", path])).code,
          0,
        );
        await mutate(db.sql);
        const mutated = await snapshot(db.sql);

        const no = await runOnTerminal([
          "--database-url",
          db.url,
          "restore",
          path,
        ], "n");
        assert.equal(no.code, 1, no.output);
        assert.match(
          no.output,
          /Restore ".*app\.dump" into postgres:\/\/postgres@127\.0\.0\.1:\d+\/mm_t_\w+\? Every schema in the backup is emptied and returned to the backup's state/,
        );
        assert.match(no.output, /Restore cancelled: nothing was changed/);
        assert.deepEqual(await snapshot(db.sql), mutated);

        const yes = await runOnTerminal([
          "--database-url",
          db.url,
          "restore",
          path,
        ], "y");
        assert.equal(yes.code, 0, yes.output);
        assert.match(yes.output, /Restored ".*app\.dump" into postgres:\/\//);
        assert.deepEqual(await snapshot(db.sql), before);
      });
    },
    { versions: [15] },
  );
}

pgTest(
  "restore waits for the migration advisory lock before touching anything",
  async (db) => {
    await createFixture(db.sql);
    const before = await snapshot(db.sql);
    await withTempDir(async (dir) => {
      const path = `${dir}/app.dump`;
      assert.equal((await cli(db, ["backup", "--backup-path", path])).code, 0);
      await mutate(db.sql);
      const mutated = await snapshot(db.sql);
      const key = await lockKey(historyTables("public"));
      const holder = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        const [{ pid }] = await holder`
          select pg_advisory_lock(${key.toString()}::bigint), pg_backend_pid() as pid`;
        const run = cli(db, ["restore", path, "--yes"]);
        // The restore connects, then polls for the lock.
        await waitFor(async () => {
          const rows = await db.sql`
            select 1 from pg_stat_activity
             where application_name = 'managed-migrate restore'`;
          return rows.length > 0;
        });
        await new Promise((r) => setTimeout(r, 800));
        assert.deepEqual(
          await snapshot(db.sql),
          mutated,
          "nothing restored while the lock is held",
        );
        await holder`select pg_advisory_unlock(${key.toString()}::bigint)`;
        const r = await run;
        assert.equal(r.code, 0, show(r));
        assert.match(
          r.stderr,
          new RegExp(`Waiting for the migration lock held by pid ${pid} `),
        );
        assert.deepEqual(await snapshot(db.sql), before);
      } finally {
        await holder.end();
      }
    });
  },
  { versions: [15] },
);

/** Ordered checksums of every table's rows in the user's schemas. */
async function contents(sql: Sql): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const tables = await sql<{ name: string }[]>`
    select quote_ident(table_schema) || '.' || quote_ident(table_name) as name
      from information_schema.tables
     where table_type = 'BASE TABLE'
       and table_schema not in ('pg_catalog', 'information_schema')
     order by 1`;
  for (const { name } of tables) {
    const [row] = await sql.unsafe(
      `select count(*)::text as n,
              md5(coalesce(string_agg(t::text, ',' order by t::text), '')) as sum
         from ${name} t`,
    );
    out[name] = `${row.n}:${row.sum}`;
  }
  return out;
}

/** The public schema's catalog row, all but its oid, plus the extensions. */
async function publicSchema(sql: Sql): Promise<Record<string, unknown>> {
  const [row] = await sql`
    select nspname, nspowner::regrole::text as owner, nspacl::text as acl,
           obj_description(oid, 'pg_namespace') as comment
      from pg_namespace where nspname = 'public'`;
  return { ...row };
}

/**
 * snapshotSchema() without the line for public's comment: it lists comments
 * of user objects only (oid >= 16384), and public gets a new oid when the
 * restore recreates it (2200 before). publicSchema() compares the comment.
 */
async function schemaOf(sql: Sql): Promise<string[]> {
  return (await snapshotSchema(sql)).lines.filter((line) =>
    !line.startsWith("comment on schema public:")
  );
}

async function hasExtension(sql: Sql, name: string): Promise<boolean> {
  const rows =
    await sql`select 1 from pg_available_extensions where name = ${name}`;
  return rows.length > 0;
}

for (const ext of ["sql", "dump"] as const) {
  pgTest(
    `restore (.${ext}) returns every covered schema to the backup: newer tables, views, columns, rows and extensions are gone`,
    async (db) => {
      await createFixture(db.sql);
      await db.sql.unsafe(`
        create schema app;
        create table app.items (id int primary key, label text);
        insert into app.items select g, 'item ' || g from generate_series(1, 50) g;
        -- A row that looks like pg_dump's TOC header naming schema "later":
        -- it must not make the restore drop that schema.
        create table app.tricky (line text);
        insert into app.tricky values
          ('--'), ('-- Name: t; Type: TABLE; Schema: later; Owner: postgres'), ('--');
        create function app.body() returns text language sql
          as $$ select '
--
-- Name: t; Type: TABLE; Schema: later; Owner: postgres
--
'::text $$;
        -- A public schema that is not initdb's: the ACL must survive grant by grant.
        grant create on schema public to public;
        comment on schema public is 'our public schema';
      `);
      // contrib may be missing elsewhere: then only the extension part is skipped.
      const withCitext = await hasExtension(db.sql, "citext");
      await withTempDir(async (dir) => {
        const path = `${dir}/app.${ext}`;
        const backup = await cli(db, ["backup", "--backup-path", path]);
        assert.equal(backup.code, 0, show(backup));
        const schemaAtBackup = await schemaOf(db.sql);
        const rowsAtBackup = await contents(db.sql);
        const publicAtBackup = await publicSchema(db.sql);

        await db.sql.unsafe(`
          create table public.newer (id int);
          create table app.newer_in_app (id int);
          create view public.newer_view as select id, email from users;
          alter table users add column extra text;
          alter table app.items add column price numeric;
          insert into users (email) values ('late@example.com');
          insert into app.items values (51, 'late', 1.5);
          create schema later;
          create table later.t (id int);
        `);
        if (withCitext) await db.sql`create extension citext`;
        const later = await db.sql`select count(*)::int as n from later.t`;
        assert.notDeepEqual(await schemaOf(db.sql), schemaAtBackup);

        const r = await cli(db, ["--json", "restore", path, "--yes"]);
        assert.equal(r.code, 0, show(r));
        const doc = r.json as { restore: { schemas: string[] } };
        assert.deepEqual(doc.restore.schemas, ["app", "public"]);

        // A schema the backup does not cover is not touched (even though a
        // table row and a function body in the backup mimic a header naming it).
        assert.deepEqual(
          await db.sql`select count(*)::int as n from later.t`,
          later,
        );
        await db.sql`drop schema later cascade`;

        assert.deepEqual(await schemaOf(db.sql), schemaAtBackup);
        assert.deepEqual(await contents(db.sql), rowsAtBackup);
        assert.deepEqual(await publicSchema(db.sql), publicAtBackup);
        assert.equal(
          (await db.sql`select to_regclass('public.newer') as r`)[0].r,
          null,
          "a table created after the backup is gone",
        );
        const exts = await db.sql`select extname from pg_extension`;
        assert.ok(
          !exts.some((e) => e.extname === "citext"),
          "an extension created after the backup is gone",
        );

        // Restoring again gives the same state (nothing accumulates).
        const again = await cli(db, ["restore", path, "--yes"]);
        assert.equal(again.code, 0, show(again));
        assert.deepEqual(await schemaOf(db.sql), schemaAtBackup);
        assert.deepEqual(await publicSchema(db.sql), publicAtBackup);
      });
    },
    { versions: [15] },
  );

  pgTest(
    `restore (.${ext}) of the backup migrate took lets the same migration run again`,
    async (db) => {
      const dbDir = await Deno.makeTempDir({ prefix: "mm-restore-db-" });
      try {
        await Deno.mkdir(`${dbDir}/managed-migrations`);
        await Deno.writeTextFile(
          `${dbDir}/managed-migrations/0001_create_x.up.sql`,
          "CREATE TABLE x (id bigint PRIMARY KEY);\n",
        );
        await Deno.writeTextFile(
          `${dbDir}/managed-migrations/0001_create_x.down.sql`,
          "DROP TABLE x;\n",
        );
        const path = `${dbDir}/before.${ext}`;
        const run = (args: string[]) => cli(db, ["--dir", dbDir, ...args]);
        const migrate = await run(["migrate", "--backup-path", path]);
        assert.equal(migrate.code, 0, show(migrate));
        assert.notEqual(
          (await db.sql`select to_regclass('public.x') as r`)[0].r,
          null,
        );

        // initdb's public (PG15: owned by pg_database_owner, =U/pg_database_owner).
        const publicBefore = await publicSchema(db.sql);
        const restore = await run(["restore", path, "--yes"]);
        assert.equal(restore.code, 0, show(restore));
        assert.deepEqual(await publicSchema(db.sql), publicBefore);
        assert.equal(
          (await db.sql`select to_regclass('public.x') as r`)[0].r,
          null,
          "the table the migration created is gone",
        );
        const history = await db
          .sql`select count(*)::int as n from public.managed_migrations`;
        assert.equal(history[0].n, 0, "the history is back to before");

        const again = await run(["migrate", "--no-backup"]);
        assert.equal(again.code, 0, show(again));
        const applied = await db
          .sql`select version from public.managed_migrations`;
        assert.deepEqual(applied.map((row) => row.version), ["0001"]);
      } finally {
        await Deno.remove(dbDir, { recursive: true });
      }
    },
    { versions: [15] },
  );
}

pgTest(
  "restore of a .sql backup that fails at its end changes nothing, not even objects created after the backup",
  async (db) => {
    await createFixture(db.sql);
    await withTempDir(async (dir) => {
      const good = `${dir}/good.sql`;
      assert.equal((await cli(db, ["backup", "--backup-path", good])).code, 0);
      const text = await Deno.readTextFile(good);
      const end = text.lastIndexOf("-- PostgreSQL database dump complete");
      assert.ok(end > 0);
      const bad = `${dir}/bad.sql`;
      await Deno.writeTextFile(
        bad,
        `${text.slice(0, end)}CREATE TABLE public.fails (x nosuchtype);\n${
          text.slice(end)
        }`,
      );
      await mutate(db.sql);
      await db.sql.unsafe(`
        create table public.newer (id int);
        insert into public.newer values (1), (2);
        create view public.newer_view as select id from users;
      `);
      const schema = await snapshotSchema(db.sql);
      const rows = await contents(db.sql);
      const publicOid = async () =>
        (await db
          .sql`select oid::int from pg_namespace where nspname = 'public'`)[0]
          .oid;
      const oid = await publicOid();

      const r = await cli(db, ["restore", bad, "--yes"]);
      assert.equal(r.code, 1, show(r));
      assert.match(
        assertOneErrorLine(r),
        /^error: Cannot restore ".*bad\.sql" into database "mm_t_\w+" \(nothing was changed\): psql exited with code 3: .*ERROR: +type "nosuchtype" does not exist/,
      );
      assert.deepEqual(await snapshotSchema(db.sql), schema);
      assert.deepEqual(await contents(db.sql), rows);
      assert.equal(await publicOid(), oid, "public was not even recreated");

      // Cut short before pg_dump's last line: refused before psql runs.
      const cut = `${dir}/cut.sql`;
      await Deno.writeTextFile(cut, text.slice(0, end));
      const refused = await cli(db, ["restore", cut, "--yes"]);
      assert.equal(refused.code, 1, show(refused));
      assert.match(
        assertOneErrorLine(refused),
        /^error: Cannot restore ".*cut\.sql": it lacks pg_dump's final "PostgreSQL database dump complete" line: the file is truncated or not a pg_dump backup \(nothing was changed\)$/,
      );
      assert.deepEqual(await contents(db.sql), rows);
    });
  },
  { versions: [15] },
);

pgTest(
  "restore of a .dump whose pg_restore dies halfway (truncated data) commits nothing",
  async (db) => {
    await db.sql.unsafe(`
      create table big (id int primary key, body text);
      insert into big select g, md5(g::text) from generate_series(1, 100000) g;
    `);
    await withTempDir(async (dir) => {
      const good = `${dir}/good.dump`;
      assert.equal((await cli(db, ["backup", "--backup-path", good])).code, 0);
      const bytes = await Deno.readFile(good);
      // The table of contents is at the start: the schema scan succeeds and
      // pg_restore fails only while streaming the data into psql.
      const cut = `${dir}/cut.dump`;
      await Deno.writeFile(cut, bytes.subarray(0, bytes.length - 2000));
      await db.sql.unsafe(`
        delete from big where id > 10;
        create table newer (id int);
      `);
      const schema = await snapshotSchema(db.sql);
      const rows = await contents(db.sql);
      const r = await cli(db, ["restore", cut, "--yes"]);
      assert.equal(r.code, 1, show(r));
      assert.match(
        assertOneErrorLine(r),
        /^error: Cannot restore ".*cut\.dump" into database "mm_t_\w+" \(nothing was changed\): pg_restore exited with code 1: pg_restore: error: /,
      );
      assert.deepEqual(await snapshotSchema(db.sql), schema);
      assert.deepEqual(await contents(db.sql), rows);
    });
  },
  { versions: [15] },
);

Deno.test("scanBackup() finds schemas in TOC headers, never in COPY rows, strings, bodies or comments", async () => {
  const script = [
    "--",
    "-- Name: app; Type: SCHEMA; Schema: -; Owner: postgres",
    "--",
    "CREATE SCHEMA app;",
    "--",
    "-- Name: f(); Type: FUNCTION; Schema: fns; Owner: postgres",
    "--",
    "CREATE FUNCTION fns.f() RETURNS text AS $_$",
    "-- Name: x; Type: TABLE; Schema: in_dollar; Owner: postgres",
    "$_$;",
    "SELECT 'it''s",
    "-- Name: x; Type: TABLE; Schema: in_string; Owner: postgres",
    "';",
    "SELECT E'\\'",
    "-- Name: x; Type: TABLE; Schema: in_estring; Owner: postgres",
    "';",
    "/* /* nested",
    "*/",
    "-- Name: x; Type: TABLE; Schema: in_comment; Owner: postgres",
    "*/",
    "--",
    "-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres",
    "--",
    "COPY public.t (line) FROM stdin;",
    "-- Name: x; Type: TABLE; Schema: in_copy; Owner: postgres",
    "\\.",
    "-- Name: pg_x; Type: TABLE; Schema: pg_catalog; Owner: postgres",
    "-- Name: plpgsql; Type: EXTENSION; Schema: -; Owner: -",
    "-- PostgreSQL database dump complete",
  ];
  async function* lines() {
    yield* script;
  }
  assert.deepEqual(await scanBackup(lines()), {
    schemas: ["app", "fns", "public"],
    complete: true,
  });
  const prelude = restorePrelude(['we"ird', "public"]);
  assert.match(prelude, /DROP SCHEMA IF EXISTS "we""ird" CASCADE;/);
  assert.match(
    prelude,
    /DROP SCHEMA public CASCADE;\n {2}CREATE SCHEMA public;/,
  );
  assert.doesNotMatch(prelude, /DROP SCHEMA IF EXISTS "public"/);
});
