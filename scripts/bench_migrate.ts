/**
 * The engine's figures, each measured in one run on fresh databases of one
 * throwaway server, as ratios to psql doing the same work (timings on shared
 * machines are noisy; ratios within one run are what to compare):
 *
 * - apply 1,000 small migrations vs the floor: the same SQL sent by psql in
 *   one session, a transaction and a history insert per migration;
 * - `migrate --single-transaction` vs `psql -1` of the same SQL;
 * - `migrate` when already up to date with 1,000 applied (wall time);
 * - `rollback --steps 100` vs psql running the same downs;
 * - `--version` (wall time).
 */

import postgres from "postgres";
import { startEphemeralServer } from "../src/pg_server/ephemeral.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const COUNT = 1000;
const encoder = new TextEncoder();
const say = (s: string) => Deno.stdout.writeSync(encoder.encode(s + "\n"));

function migrationSql(i: number): { up: string; down: string } {
  switch (i % 4) {
    case 0:
      return {
        up:
          `CREATE TABLE t${i} (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n`,
        down: `DROP TABLE t${i};\n`,
      };
    case 1:
      return {
        up: `ALTER TABLE t${i - 1} ADD COLUMN note text;\nCOMMENT ON COLUMN t${
          i - 1
        }.note IS 'free text';\n`,
        down: `-- managed-migrate: allow=drop-column\nALTER TABLE t${
          i - 1
        } DROP COLUMN note;\n`,
      };
    case 2:
      return {
        up: `CREATE INDEX t${i - 2}_name_idx ON t${i - 2} (name);\n`,
        down: `DROP INDEX t${i - 2}_name_idx;\n`,
      };
    default:
      return {
        up: `INSERT INTO t${i - 3} (id, name) VALUES (1, 'a'), (2, 'b');\n`,
        down: `DELETE FROM t${i - 3};\n`,
      };
  }
}

async function writeHistory(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/managed-migrations`, { recursive: true });
  for (let i = 0; i < COUNT; i++) {
    const v = String(i + 1).padStart(6, "0");
    const { up, down } = migrationSql(i);
    await Deno.writeTextFile(`${dir}/managed-migrations/${v}_m${i}.up.sql`, up);
    await Deno.writeTextFile(
      `${dir}/managed-migrations/${v}_m${i}.down.sql`,
      down,
    );
  }
}

const HISTORY_DDL =
  `CREATE TABLE managed_migrations (version text PRIMARY KEY, name text NOT NULL,
  checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL DEFAULT 0,
  applied_by text NOT NULL DEFAULT current_user, state text NOT NULL DEFAULT 'applied');\n`;

function psqlScript(
  steps: { version: string; name: string; sql: string }[],
  perMigrationTransaction: boolean,
  down = false,
): string {
  return steps.map((s) => {
    const history = down
      ? `DELETE FROM managed_migrations WHERE version = '${s.version}';`
      : `INSERT INTO managed_migrations (version, name, checksum, duration_ms) VALUES ('${s.version}', '${s.name}', '${
        "0".repeat(64)
      }', 1);`;
    const body =
      `SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = '10min';\n${s.sql}${history}\n`;
    return perMigrationTransaction ? `BEGIN;\n${body}COMMIT;\n` : body;
  }).join("");
}

async function time(fn: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (out.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${
        new TextDecoder().decode(out.stderr).slice(-500)
      }`,
    );
  }
}

function cli(args: string[], url: string) {
  return run(Deno.execPath(), [
    "run",
    "-A",
    "--quiet",
    `${ROOT}main.ts`,
    ...args,
  ], { DATABASE_URL: url });
}

/** Runs every engine benchmark and prints the figures. */
export async function main(): Promise<void> {
  const server = await startEphemeralServer({});
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  const psql = "/usr/lib/postgresql/15/bin/psql";
  const work = await Deno.makeTempDir({ prefix: "mm_bench_" });
  let n = 0;
  const freshDb = async () => {
    const name = `bench_${n++}`;
    await admin.unsafe(`create database ${name}`);
    return server.url.replace(/\/postgres$/, `/${name}`);
  };
  try {
    await writeHistory(`${work}/db`);
    const steps = Array.from({ length: COUNT }, (_, i) => ({
      version: String(i + 1).padStart(6, "0"),
      name: `m${i}`,
      sql: migrationSql(i).up,
      down: migrationSql(i).down,
    }));
    await Deno.writeTextFile(
      `${work}/floor.sql`,
      HISTORY_DDL + psqlScript(steps, true),
    );
    await Deno.writeTextFile(
      `${work}/floor1.sql`,
      HISTORY_DDL + psqlScript(steps, false),
    );
    const downs = steps.slice(-100).reverse().map((s) => ({
      ...s,
      sql: s.down,
    }));
    await Deno.writeTextFile(
      `${work}/downs.sql`,
      psqlScript(downs, true, true),
    );
    const psqlArgs = (url: string, file: string, one = false) => [
      "-X",
      "-q",
      "-v",
      "ON_ERROR_STOP=1",
      ...(one ? ["-1"] : []),
      "-d",
      url,
      "-f",
      file,
    ];
    say(
      `bench on PostgreSQL ${server.version}, ${COUNT} small migrations (tables, columns, indexes, inserts)`,
    );

    const floorUrl = await freshDb();
    const floor = await time(() =>
      run(psql, psqlArgs(floorUrl, `${work}/floor.sql`))
    );
    const oursUrl = await freshDb();
    const ours = await time(() =>
      cli(["--dir", `${work}/db`, "migrate", "--no-backup"], oursUrl)
    );
    say(
      `apply ${COUNT}: managed-migrate ${
        (ours / 1000).toFixed(2)
      }s, psql floor ${(floor / 1000).toFixed(2)}s, ratio ${
        (ours / floor).toFixed(2)
      }x (target <= 1.10x)`,
    );

    const oneFloorUrl = await freshDb();
    const oneFloor = await time(() =>
      run(psql, psqlArgs(oneFloorUrl, `${work}/floor1.sql`, true))
    );
    const oneUrl = await freshDb();
    const one = await time(() =>
      cli([
        "--dir",
        `${work}/db`,
        "migrate",
        "--no-backup",
        "--single-transaction",
      ], oneUrl)
    );
    say(
      `apply ${COUNT} --single-transaction: ${
        (one / 1000).toFixed(2)
      }s, psql -1 ${(oneFloor / 1000).toFixed(2)}s, ratio ${
        (one / oneFloor).toFixed(2)
      }x (target <= 1.05x)`,
    );

    const upToDate: number[] = [];
    for (let i = 0; i < 5; i++) {
      upToDate.push(
        await time(() =>
          cli(["--dir", `${work}/db`, "migrate", "--no-backup"], oursUrl)
        ),
      );
    }
    upToDate.sort((a, b) => a - b);
    say(
      `up-to-date migrate with ${COUNT} applied: median ${
        (upToDate[2] / 1000).toFixed(3)
      }s wall (target <= 0.12s)`,
    );

    const rollback = await time(() =>
      cli(
        ["--dir", `${work}/db`, "rollback", "--no-backup", "--steps", "100"],
        oursUrl,
      )
    );
    const downFloor = await time(() =>
      run(psql, psqlArgs(floorUrl, `${work}/downs.sql`))
    );
    say(
      `rollback --steps 100: ${(rollback / 1000).toFixed(2)}s, psql ${
        (downFloor / 1000).toFixed(2)
      }s, ratio ${(rollback / downFloor).toFixed(2)}x (target <= 1.5x)`,
    );

    const versions: number[] = [];
    for (let i = 0; i < 5; i++) {
      versions.push(
        await time(() =>
          run(Deno.execPath(), [
            "run",
            "-A",
            "--quiet",
            `${ROOT}main.ts`,
            "--version",
          ])
        ),
      );
    }
    versions.sort((a, b) => a - b);
    say(`--version: median ${(versions[2] / 1000).toFixed(3)}s wall`);
  } finally {
    await admin.end();
    await server.stop();
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) await main();
