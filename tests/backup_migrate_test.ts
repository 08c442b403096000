/**
 * The backup step of migrate and rollback: taken before the first statement,
 * private, and a failed backup (pg_dump missing or too old, directory
 * missing) aborts the run with nothing applied.
 */

import assert from "node:assert/strict";
import { type CliResult, runCli } from "./helpers/cli.ts";
import { pgTest, type TestDb } from "./helpers/postgres.ts";

/** A db directory of its own: two migrations that only create tables. */
const BASIC = await Deno.makeTempDir({ prefix: "mm-backup-migrate-db-" });
await Deno.mkdir(`${BASIC}/managed-migrations`);
for (
  const [name, up, down] of [
    [
      "0001_create_users",
      "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);",
      "DROP TABLE users;",
    ],
    [
      "0002_create_posts",
      "CREATE TABLE posts (id bigint PRIMARY KEY, body text);",
      "DROP TABLE posts;",
    ],
  ]
) {
  await Deno.writeTextFile(
    `${BASIC}/managed-migrations/${name}.up.sql`,
    `${up}\n`,
  );
  await Deno.writeTextFile(
    `${BASIC}/managed-migrations/${name}.down.sql`,
    `${down}\n`,
  );
}
globalThis.addEventListener(
  "unload",
  () => Deno.removeSync(BASIC, { recursive: true }),
);

function cli(db: TestDb, args: string[]): Promise<CliResult> {
  return runCli(["--dir", BASIC, "--database-url", db.url, ...args]);
}

function show(r: CliResult): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** The single `error:` line of a failed run (other stderr lines are progress logs). */
function errorLine(r: CliResult): string {
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("error: "));
  assert.equal(errors.length, 1, show(r));
  assert.doesNotMatch(r.stderr, /\s+at .*:\d+:\d+/, "no stack trace");
  return errors[0];
}

/** Applied versions and whether the fixture's table exists. */
async function state(
  db: TestDb,
): Promise<{ applied: string[]; users: boolean }> {
  const [{ users, history }] = await db.sql`
    select to_regclass('public.users') is not null as users,
           to_regclass('public.managed_migrations') is not null as history`;
  const applied = history
    ? (await db.sql<{ version: string }[]>`
        select version from managed_migrations order by version`).map((r) =>
      r.version
    )
    : [];
  return { applied, users };
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mm-backup-migrate-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

pgTest(
  "migrate and rollback back up first, and apply nothing when the backup cannot be taken",
  async (db) => {
    await withTempDir(async (dir) => {
      const empty = `${dir}/empty-bin`;
      await Deno.mkdir(empty);
      const nothing = { applied: [], users: false };

      const noTool = await cli(db, [
        "--pg-bin",
        empty,
        "migrate",
        "--backup-path",
        `${dir}/pre.sql`,
      ]);
      assert.equal(noTool.code, 1, show(noTool));
      assert.match(
        errorLine(noTool),
        /Cannot run pg_dump: ".*empty-bin\/pg_dump" does not exist or is not executable: install the PostgreSQL client/,
      );
      assert.deepEqual(await state(db), nothing);

      const noPath = await runCli([
        "--dir",
        BASIC,
        "--database-url",
        db.url,
        "migrate",
      ], {
        env: { PATH: empty },
        unset: ["PG_BIN"],
        cwd: dir,
      });
      assert.equal(noPath.code, 1, show(noPath));
      assert.match(errorLine(noPath), /Cannot run pg_dump: not found on PATH/);
      assert.deepEqual(await state(db), nothing);

      const noDir = await cli(db, [
        "migrate",
        "--backup-path",
        `${dir}/nope/pre.sql`,
      ]);
      assert.equal(noDir.code, 1, show(noDir));
      assert.match(
        errorLine(noDir),
        /Cannot write backup ".*\/nope\/pre\.sql": directory ".*\/nope" does not exist/,
      );
      assert.deepEqual(await state(db), nothing);

      const ok = await cli(db, [
        "--json",
        "migrate",
        "--backup-path",
        `${dir}/pre.sql`,
      ]);
      assert.equal(ok.code, 0, show(ok));
      const doc = ok.json as {
        backup: { path: string; bytes: number; durationMs: number };
      };
      assert.equal(doc.backup.path, `${dir}/pre.sql`);
      assert.equal(doc.backup.bytes, (await Deno.stat(`${dir}/pre.sql`)).size);
      assert.equal((await Deno.stat(`${dir}/pre.sql`)).mode! & 0o777, 0o600);
      // Taken before the first statement: the table does not exist in it yet.
      assert.doesNotMatch(
        await Deno.readTextFile(`${dir}/pre.sql`),
        /CREATE TABLE public\.users/,
      );
      assert.equal((await state(db)).users, true);

      const back = await cli(db, [
        "--json",
        "rollback",
        "--steps",
        "2",
        "--backup-path",
        `${dir}/pre-rollback.dump`,
      ]);
      assert.equal(back.code, 0, show(back));
      assert.equal(
        (back.json as { backup: { path: string } }).backup.path,
        `${dir}/pre-rollback.dump`,
      );
      const list = await new Deno.Command(
        "/usr/lib/postgresql/15/bin/pg_restore",
        {
          args: ["--list", `${dir}/pre-rollback.dump`],
          stdout: "piped",
        },
      ).output();
      assert.match(
        new TextDecoder().decode(list.stdout),
        /TABLE public users/,
        "taken before the down ran",
      );
      assert.equal((await state(db)).users, false);

      const skipped = await cli(db, [
        "--pg-bin",
        empty,
        "--json",
        "migrate",
        "--no-backup",
      ]);
      assert.equal(skipped.code, 0, show(skipped));
      assert.equal((skipped.json as { backup: unknown }).backup, null);
      assert.equal((await state(db)).users, true);
    });
  },
  { versions: [15] },
);

pgTest(
  "migrate refuses a pg_dump older than the server before applying anything",
  async (db) => {
    await withTempDir(async (dir) => {
      const r = await cli(db, ["migrate", "--backup-path", `${dir}/pre.sql`]);
      assert.equal(r.code, 1, show(r));
      assert.match(
        errorLine(r),
        /Cannot back up with pg_dump 15 .*the server runs PostgreSQL 18: install the PostgreSQL 18 client/,
      );
      assert.deepEqual(await state(db), { applied: [], users: false });
      const entries = [...Deno.readDirSync(dir)];
      assert.deepEqual(entries, [], "no backup file, not even a temporary one");
    });
  },
  { versions: [18] },
);
