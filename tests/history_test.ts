/**
 * Whole histories: each fixture goes all up, all down, then up one by one,
 * checking the history after each phase (pressly/goose integration tests);
 * and a generated history of 320 migrations of every kind.
 */
import assert from "node:assert/strict";
import { pgTest } from "./helpers/postgres.ts";
import { runCli } from "./helpers/cli.ts";
import { discoverMigrations } from "../src/files/discover.ts";

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

async function versions(sql: import("postgres").Sql): Promise<string[]> {
  const rows =
    await sql`select version from managed_migrations where state = 'applied'`;
  return rows.map((r) => r.version as string).sort((a, b) =>
    Number(a) - Number(b)
  );
}

for (const name of ["basic", "no_transaction_index", "seeds"]) {
  pgTest(
    `fixture "${name}" goes all up, all down, then up one by one`,
    async (db) => {
      const dir = fixture(name);
      const env = { DATABASE_URL: db.url };
      const all = (await discoverMigrations(dir)).map((m) => m.version);
      const up = await runCli(["--dir", dir, "migrate", "--no-backup"], {
        env,
      });
      assert.equal(up.code, 0, up.stderr);
      assert.deepEqual(await versions(db.sql), all);
      const down = await runCli([
        "--dir",
        dir,
        "rollback",
        "--no-backup",
        "--steps",
        String(all.length),
      ], { env });
      assert.equal(down.code, 0, down.stderr);
      assert.deepEqual(await versions(db.sql), []);
      for (let i = 0; i < all.length; i++) {
        const step = await runCli([
          "--dir",
          dir,
          "migrate",
          "--no-backup",
          "--to",
          all[i],
        ], { env });
        assert.equal(step.code, 0, step.stderr);
        assert.deepEqual(await versions(db.sql), all.slice(0, i + 1));
      }
    },
  );
}

/** Writes a realistic long history: empty files, no-transaction indexes, DO blocks, multi-statement files. */
async function writeLongHistory(dir: string, count: number): Promise<void> {
  await Deno.mkdir(`${dir}/managed-migrations`, { recursive: true });
  const write = (v: number, name: string, up: string, down: string) =>
    Promise.all([
      Deno.writeTextFile(
        `${dir}/managed-migrations/${
          String(v).padStart(5, "0")
        }_${name}.up.sql`,
        up,
      ),
      Deno.writeTextFile(
        `${dir}/managed-migrations/${
          String(v).padStart(5, "0")
        }_${name}.down.sql`,
        down,
      ),
    ]);
  for (let v = 1; v <= count; v++) {
    const t = `t${Math.floor((v - 1) / 8)}`;
    switch ((v - 1) % 8) {
      case 0:
        await write(
          v,
          `create_${t}`,
          `CREATE TABLE ${t} (id bigint PRIMARY KEY, name text);\n`,
          `DROP TABLE ${t};\n`,
        );
        break;
      case 1:
        await write(v, "placeholder", "", "");
        break;
      case 2:
        await write(
          v,
          `index_${t}`,
          `-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY ${t}_name_idx ON ${t} (name);\n`,
          `-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY ${t}_name_idx;\n`,
        );
        break;
      case 3:
        await write(
          v,
          `backfill_${t}`,
          `-- managed-migrate: allow=dynamic-sql\nDO $$\nBEGIN\n  INSERT INTO ${t} (id, name) SELECT g, 'n' || g FROM generate_series(1, 50) g;\nEND\n$$;\n`,
          `DELETE FROM ${t};\n`,
        );
        break;
      case 4:
        await write(
          v,
          `columns_${t}`,
          `ALTER TABLE ${t} ADD COLUMN note text;\nALTER TABLE ${t} ADD COLUMN flag boolean NOT NULL DEFAULT false;\nCOMMENT ON TABLE ${t} IS 'generated';\n`,
          `-- managed-migrate: allow=drop-column\nALTER TABLE ${t} DROP COLUMN flag;\nALTER TABLE ${t} DROP COLUMN note;\nCOMMENT ON TABLE ${t} IS NULL;\n`,
        );
        break;
      case 5:
        await write(
          v,
          `view_${t}`,
          `CREATE VIEW ${t}_names AS SELECT id, name FROM ${t};\nCREATE FUNCTION ${t}_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM ${t} $$;\n`,
          `DROP FUNCTION ${t}_count();\nDROP VIEW ${t}_names;\n`,
        );
        break;
      case 6:
        await write(
          v,
          "comment_only",
          "-- nothing to do in this release\n",
          "-- nothing to undo\n",
        );
        break;
      default:
        await write(
          v,
          `seed_${t}`,
          `INSERT INTO ${t} (id, name) VALUES (1000, 'x'), (1001, 'y');\nUPDATE ${t} SET note = 'seeded' WHERE id >= 1000;\n`,
          `DELETE FROM ${t} WHERE id >= 1000;\n`,
        );
    }
  }
}

pgTest(
  "a history of 320 migrations of every kind applies, rolls all the way back, and re-applies",
  async (db) => {
    const dir = await Deno.makeTempDir({ prefix: "mm_history_" });
    await writeLongHistory(dir, 320);
    const env = { DATABASE_URL: db.url };
    const up = await runCli(
      ["--dir", dir, "--json", "migrate", "--no-backup"],
      { env },
    );
    assert.equal(up.code, 0, up.stderr);
    assert.equal((up.json as { applied: unknown[] }).applied.length, 320);
    assert.equal((await versions(db.sql)).length, 320);
    const [{ n }] = await db
      .sql`select count(*)::int as n from pg_indexes where indexname like '%_name_idx'`;
    assert.equal(n, 40);

    const down = await runCli([
      "--dir",
      dir,
      "rollback",
      "--no-backup",
      "--steps",
      "320",
    ], { env });
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await versions(db.sql), []);
    const left = await db
      .sql`select tablename from pg_tables where schemaname = 'public' and tablename ~ '^t[0-9]+$'`;
    assert.equal(left.length, 0);

    const again = await runCli(["--dir", dir, "migrate", "--no-backup"], {
      env,
    });
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await versions(db.sql)).length, 320);
    const status = await runCli(["--dir", dir, "status", "--check"], { env });
    assert.equal(status.code, 0, status.stderr);
    await Deno.remove(dir, { recursive: true });
  },
);
