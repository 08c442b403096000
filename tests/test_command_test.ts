import assert from "node:assert/strict";
import { pgTest } from "./helpers/postgres.ts";
import { runCli } from "./helpers/cli.ts";
import { discoverMigrations } from "../src/files/discover.ts";
import { prepareSql } from "../src/engine/round_trip.ts";

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

interface TestDoc {
  migrations: {
    version: string;
    name: string;
    up: string;
    down: string;
    roundTrip: string;
    upAgain: string;
    diff: string[];
    error?: string;
    notes: string[];
  }[];
  seeds: { name: string; status: string }[];
  ok: boolean;
  durationMs: number;
}

/** Writes to stderr (measurements for the closing note). */
function log(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`${text}\n`));
}

async function schemaDump(url: string, binDir?: string): Promise<string> {
  const out = await new Deno.Command(
    `${binDir ?? "/usr/lib/postgresql/15/bin"}/pg_dump`,
    {
      args: ["--schema-only", "--restrict-key=managedmigratetest", url],
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

pgTest(
  "test reports each down that does not reverse its up with a diff naming the object, and exits 1",
  async ({ url }) => {
    const cases: [string, string, string][] = [
      [
        "roundtrip_index_left",
        "202402010002",
        "index public.orders_customer_idx",
      ],
      [
        "roundtrip_wrong_column",
        "202403010002",
        "column public.people.full_name",
      ],
      ["roundtrip_enum_value", "202404010002", "type public.ticket_status"],
    ];
    for (const [name, version, object] of cases) {
      const res = await runCli([
        "--dir",
        fixture(name),
        "--database-url",
        url,
        "--json",
        "test",
      ]);
      assert.equal(res.code, 1, res.stderr);
      const doc = res.json as TestDoc;
      assert.equal(doc.ok, false);
      const failed = doc.migrations.filter((m) => m.roundTrip === "failed");
      assert.deepEqual(failed.map((m) => m.version), [version]);
      assert.ok(
        failed[0].diff.some((l) => l.includes(object)),
        `${name}: ${failed[0].diff.join("\n")}`,
      );
      // Text output: the failing migration, its diff indented under it.
      const text = await runCli([
        "--dir",
        fixture(name),
        "--database-url",
        url,
        "test",
      ]);
      assert.equal(text.code, 1);
      assert.match(
        text.stdout,
        new RegExp(
          `✗ ${version}_\\w+: down does not restore the schema\\n {4}[-+] `,
        ),
      );
      assert.match(text.stdout, /^FAILED: /m);
    }
  },
);

pgTest(
  "test passes a correct history and leaves the target database byte-for-byte unchanged, with no history tables",
  async ({ url, sql, binDir }) => {
    await sql.unsafe(
      "create table existing (id int primary key, note text); create index existing_note on existing (note)",
    );
    const before = await schemaDump(url, binDir);
    const res = await runCli([
      "--dir",
      fixture("roundtrip_good"),
      "--database-url",
      url,
      "--json",
      "test",
    ]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const doc = res.json as TestDoc;
    assert.equal(doc.ok, true);
    assert.equal(doc.migrations.length, 5);
    assert.deepEqual(doc.seeds.map((s) => s.status), ["ok"]);
    assert.ok(
      doc.migrations[1].notes.some((n) => n.includes("CONCURRENTLY removed")),
    );
    const after = await schemaDump(url, binDir);
    assert.equal(after, before);
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_class
      where relname in ('managed_migrations', 'seed_history')`;
    assert.equal(n, 0);
  },
  { versions: [15] },
);

pgTest(
  "test stops at a failing up, names the file and line, and exits 1",
  async ({ url }) => {
    const res = await runCli([
      "--dir",
      fixture("roundtrip_up_fails"),
      "--database-url",
      url,
      "test",
    ]);
    assert.equal(res.code, 1);
    assert.match(
      res.stdout,
      /✗ 202405010002_broken: up failed: .*202405010002_broken\.up\.sql:3:1: relation "item_skus" does not exist/,
    );
    assert.match(res.stdout, /- 202405010003_after: not run/);
    assert.doesNotMatch(res.stderr, /\n\s+at /, "no stack trace");
  },
);

pgTest(
  "test --from applies the earlier migrations plainly and checks only the later ones",
  async ({ url }) => {
    const res = await runCli([
      "--dir",
      fixture("roundtrip_index_left"),
      "--database-url",
      url,
      "--json",
      "test",
      "--from",
      "202402010002",
    ]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const doc = res.json as TestDoc & { prepared: string[] };
    assert.deepEqual(doc.prepared, [
      "202402010001_create_orders",
      "202402010002_index_customer",
    ]);
    assert.deepEqual(doc.migrations.map((m) => m.version), ["202402010003"]);
    assert.equal(doc.ok, true);
  },
);

Deno.test(
  "test rejects a --from that is not a version with exit 2",
  async () => {
    const res = await runCli([
      "--dir",
      fixture("roundtrip_good"),
      "test",
      "--from",
      "latest",
    ]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /Invalid --from "latest"/);
  },
);

Deno.test(
  "test --ephemeral checks a history on a throwaway server without any URL",
  async () => {
    const res = await runCli([
      "--dir",
      fixture("roundtrip_good"),
      "--json",
      "test",
      "--ephemeral",
    ], { unset: ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER"] });
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const doc = res.json as TestDoc;
    assert.equal(doc.ok, true);
    assert.ok(
      doc.migrations[1].notes.some((n) => n.includes("run for real")),
      JSON.stringify(doc.migrations[1]),
    );
  },
);

const BAD_BLOCKS = [5, 17, 28];

/**
 * A 300-migration history like real ones: 30 blocks of 10 (tables, a
 * no-transaction CREATE INDEX CONCURRENTLY, a DO block, multi-statement
 * files, empty and comment-only files, functions, enum types) where in
 * BAD_BLOCKS the down of an index migration was left empty.
 */
async function writeBigHistory(): Promise<{ dir: string; bad: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "mm-300-" });
  const m = `${dir}/managed-migrations`;
  await Deno.mkdir(m, { recursive: true });
  const bad: string[] = [];
  const write = async (n: number, name: string, up: string, down: string) => {
    const version = String(n).padStart(4, "0");
    await Deno.writeTextFile(`${m}/${version}_${name}.up.sql`, up);
    await Deno.writeTextFile(`${m}/${version}_${name}.down.sql`, down);
    return version;
  };
  for (let k = 0; k < 30; k++) {
    const n = k * 10 + 1;
    const t = `t_${k}`;
    await write(
      n,
      `create_${t}`,
      `CREATE TABLE ${t} (id bigint PRIMARY KEY, v text, n int);\n`,
      `DROP TABLE ${t};\n`,
    );
    await write(
      n + 1,
      `index_${t}_v`,
      `-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY ${t}_v_idx ON ${t} (v);\n`,
      `-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY ${t}_v_idx;\n`,
    );
    await write(
      n + 2,
      `do_block_${k}`,
      `DO $$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '${t}'::regclass AND attname = 'flag') THEN\n    EXECUTE 'ALTER TABLE ${t} ADD COLUMN flag boolean';\n  END IF;\nEND\n$$;\n`,
      `ALTER TABLE ${t} DROP COLUMN flag;\n`,
    );
    await write(
      n + 3,
      `children_${k}`,
      `CREATE TABLE c_${k} (id serial PRIMARY KEY, parent bigint REFERENCES ${t} (id));\nCOMMENT ON TABLE c_${k} IS 'children of ${t}';\nINSERT INTO ${t} (id, v) VALUES (1, 'one');\nCREATE VIEW v_${k} AS SELECT c.id, p.v FROM c_${k} c JOIN ${t} p ON p.id = c.parent;\n`,
      `DROP VIEW v_${k};\nDROP TABLE c_${k};\nDELETE FROM ${t} WHERE id = 1;\n`,
    );
    await write(n + 4, `empty_${k}`, "", "");
    await write(
      n + 5,
      `function_${k}`,
      `CREATE FUNCTION f_${k}(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x * ${k} $$;\n`,
      `DROP FUNCTION f_${k}(int);\n`,
    );
    await write(
      n + 6,
      `column_w_${k}`,
      `ALTER TABLE ${t} ADD COLUMN w int NOT NULL DEFAULT 0;\n`,
      `ALTER TABLE ${t} DROP COLUMN w;\n`,
    );
    const isBad = BAD_BLOCKS.includes(k);
    const version = await write(
      n + 7,
      `index_${t}_n`,
      `CREATE INDEX ${t}_n_idx ON ${t} (n);\n`,
      isBad ? "" : `DROP INDEX ${t}_n_idx;\n`,
    );
    if (isBad) bad.push(version);
    await write(
      n + 8,
      `enum_${k}`,
      `CREATE TYPE e_${k} AS ENUM ('a', 'b');\n`,
      `DROP TYPE e_${k};\n`,
    );
    await write(
      n + 9,
      `placeholder_${k}`,
      "-- kept for history: this change shipped elsewhere\n",
      "-- nothing to undo\n",
    );
  }
  return { dir, bad };
}

pgTest(
  "test --ephemeral runs a 300-migration history to the end and reports exactly the downs that do not reverse",
  async ({ url }) => {
    const { dir, bad } = await writeBigHistory();
    try {
      let started = performance.now();
      const res = await runCli(["--dir", dir, "--json", "test", "--ephemeral"]);
      const ephemeralMs = performance.now() - started;
      assert.equal(res.code, 1, res.stderr);
      const doc = res.json as TestDoc;
      assert.equal(doc.migrations.length, 300);
      assert.ok(doc.migrations.every((m) => m.up === "ok"));
      const failing = doc.migrations.filter((m) =>
        m.roundTrip === "failed" || m.down === "failed" ||
        m.upAgain === "failed"
      );
      assert.deepEqual(failing.map((m) => m.version), bad);
      for (const m of failing) {
        assert.deepEqual(m.diff.length, 1, m.diff.join("\n"));
        assert.match(m.diff[0], /^\+ index public\.t_\d+_n_idx: CREATE INDEX/);
      }
      const noTx = doc.migrations.filter((m) =>
        m.name.startsWith("index_") && m.name.endsWith("_v")
      );
      assert.equal(noTx.length, 30);
      assert.ok(
        noTx.every((m) => m.notes.some((n) => n.includes("run for real"))),
      );

      // The same history inside one rolled-back transaction on the target.
      started = performance.now();
      const inTx = await runCli([
        "--dir",
        dir,
        "--database-url",
        url,
        "--json",
        "test",
      ]);
      const rollbackMs = performance.now() - started;
      assert.equal(inTx.code, 1, inTx.stderr);
      assert.deepEqual(
        (inTx.json as TestDoc).migrations.filter((m) =>
          m.roundTrip === "failed"
        )
          .map((m) => m.version),
        bad,
      );

      // Against applying the same history once, same server, fresh databases:
      // `migrate` (the product) and a plain stand-in (each up in its own
      // transaction, no-transaction ones statement by statement).
      const admin = new URL(url);
      admin.pathname = "/postgres";
      const base = new URL(url).pathname.slice(1);
      const plainMs = await withFreshDb(admin, `${base}_plain`, async (u) => {
        const postgres = (await import("postgres")).default;
        const sql = postgres(u, { max: 1, onnotice: () => {} });
        try {
          const t = performance.now();
          for (const m of await discoverMigrations(dir)) {
            if (m.up.noTransaction) {
              for (const st of (await prepareSql(m.upSql)).statements) {
                await sql.unsafe(st.sql);
              }
            } else {
              await sql.begin((tx) => tx.unsafe(m.upSql));
            }
          }
          return performance.now() - t;
        } finally {
          await sql.end({ timeout: 5 });
        }
      });
      const migrate = await withFreshDb(admin, `${base}_migrate`, async (u) => {
        const t = performance.now();
        const res = await runCli([
          "--dir",
          dir,
          "--database-url",
          u,
          "migrate",
          "--no-backup",
        ]);
        return { ms: performance.now() - t, res };
      });
      log(
        `300 migrations: test --ephemeral ${
          Math.round(ephemeralMs)
        }ms (engine ${doc.durationMs}ms), ` +
          `test in one transaction ${Math.round(rollbackMs)}ms (engine ${
            (inTx.json as TestDoc).durationMs
          }ms), ` +
          `plain apply ${Math.round(plainMs)}ms (in-process), ` +
          `migrate --no-backup ${
            Math.round(migrate.ms)
          }ms exit ${migrate.res.code} (wall clock, CLI start included)` +
          (migrate.res.code === 0
            ? ""
            : `: ${migrate.res.stderr.trim().split("\n").pop()}`),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
  { versions: [15] },
);

async function withFreshDb<T>(
  admin: URL,
  name: string,
  fn: (url: string) => Promise<T>,
): Promise<T> {
  await adminQuery(admin.toString(), `create database "${name}"`);
  try {
    const u = new URL(admin);
    u.pathname = `/${name}`;
    return await fn(u.toString());
  } finally {
    await adminQuery(admin.toString(), `drop database "${name}" with (force)`);
  }
}

async function adminQuery(url: string, command: string): Promise<void> {
  const postgres = (await import("postgres")).default;
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(command);
  } finally {
    await sql.end({ timeout: 5 });
  }
}
