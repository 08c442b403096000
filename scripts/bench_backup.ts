/**
 * Benchmark: `managed-migrate backup` against running pg_dump directly, on a
 * ~200 MB database in a throwaway server, for both formats. Prints the median
 * and the fastest run of each and their ratios (target ≤ 1.05×); on a busy
 * machine the fastest runs are the steadier figure. Our backup also fsyncs
 * the file and its directory, which plain-format pg_dump does not.
 *
 *     deno run -A scripts/bench_backup.ts [--size-mb 200] [--runs 5] [--bin dist/managed-migrate]
 *
 * `--bin` (or BENCH_BIN) times a compiled binary instead of `deno run main.ts`.
 * The server comes from PG_BIN or the newest local PostgreSQL; pg_dump is the
 * one on PATH (or in PG_BIN), the same one the CLI finds.
 */
// deno-lint-ignore-file no-console

import postgres from "postgres";
import { startEphemeralServer } from "../src/pg_server/ephemeral.ts";
import { findPgTool } from "../src/pg_tools/exec.ts";
import { humanBytes } from "../src/pg_tools/dump.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const sizeMb = Number(flag("size-mb") ?? 200);
const runs = Number(flag("runs") ?? 5);
const bin = flag("bin") ?? Deno.env.get("BENCH_BIN");

const server = await startEphemeralServer({
  log: (line) => console.error(line),
});
const work = await Deno.makeTempDir({ prefix: "mm-bench-backup-" });
try {
  const database = "bench";
  const url = server.url.replace(/\/postgres$/, `/${database}`);
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${database}`);
  await admin.end();

  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const started = performance.now();
  // ~158 bytes a row on disk (measured) above ~8 MB of catalogs and accounts.
  const rows = Math.round(Math.max(1, sizeMb - 8) * 1_000_000 / 158);
  await sql.unsafe(`
    create table events (
      id bigint primary key,
      account int not null,
      kind text not null,
      payload text not null,
      amount numeric(12, 2) not null,
      created_at timestamptz not null
    );
    insert into events
      select g, g % 10007, 'kind_' || (g % 17), md5(g::text) || md5((g * 7)::text),
             (g % 100000) / 100.0, '2024-01-01'::timestamptz + g * interval '1 second'
        from generate_series(1, ${rows}) g;
    create table accounts as
      select g as id, 'account ' || g as name from generate_series(1, 10007) g;
    alter table accounts add primary key (id);
  `);
  await sql.unsafe("vacuum analyze");
  const [{ size }] =
    await sql`select pg_database_size(current_database())::bigint as size`;
  await sql.end();
  console.error(
    `Built ${humanBytes(Number(size))} (${rows} rows) in ${
      ((performance.now() - started) / 1000).toFixed(1)
    }s`,
  );

  const pgDump = await findPgTool("pg_dump", Deno.env.get("PG_BIN"));
  const env = {
    PGHOST: "127.0.0.1",
    PGPORT: String(server.port),
    PGUSER: "postgres",
    PGDATABASE: database,
  };
  const time = async (argv: string[]): Promise<number> => {
    const t0 = performance.now();
    const out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: { ...env, NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    const ms = performance.now() - t0;
    if (!out.success) {
      throw new Error(
        `${argv.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    return ms;
  };
  const ours = (path: string) => [
    ...(bin ? [bin] : [Deno.execPath(), "run", "-A", "--quiet", MAIN]),
    "--database-url",
    url,
    "--quiet",
    "backup",
    "--backup-path",
    path,
  ];
  const direct = (path: string, custom: boolean) => [
    pgDump,
    "--no-password",
    ...(custom
      ? ["--format=custom"]
      : ["--format=plain", "--clean", "--if-exists"]),
    `--file=${path}`,
  ];
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };

  console.log(
    `backup of a ${
      humanBytes(Number(size))
    } database, median of ${runs} runs (${
      bin ?? "deno run main.ts"
    } vs ${pgDump})`,
  );
  for (const ext of ["sql", "dump"]) {
    const a: number[] = [];
    const b: number[] = [];
    // One warm-up of each, then alternate so the page cache favours neither.
    await time(direct(`${work}/warm.${ext}`, ext === "dump"));
    await time(ours(`${work}/warm.${ext}`));
    for (let i = 0; i < runs; i++) {
      // Swap the order each round: neither always runs right after the other.
      if (i % 2 === 0) {
        b.push(await time(direct(`${work}/direct.${ext}`, ext === "dump")));
        a.push(await time(ours(`${work}/ours.${ext}`)));
      } else {
        a.push(await time(ours(`${work}/ours.${ext}`)));
        b.push(await time(direct(`${work}/direct.${ext}`, ext === "dump")));
      }
    }
    const oursSize = (await Deno.stat(`${work}/ours.${ext}`)).size;
    const directSize = (await Deno.stat(`${work}/direct.${ext}`)).size;
    const ratio = median(a) / median(b);
    const best = Math.min(...a) / Math.min(...b);
    const secs = (ms: number) => `${(ms / 1000).toFixed(2)}s`;
    console.log(
      `.${ext}: managed-migrate backup ${secs(median(a))} (fastest ${
        secs(Math.min(...a))
      }), pg_dump ${secs(median(b))} (fastest ${secs(Math.min(...b))}): ratio ${
        ratio.toFixed(3)
      }x median, ${best.toFixed(3)}x fastest (target 1.05x); files ${
        humanBytes(oursSize)
      } vs ${humanBytes(directSize)}`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await server.stop();
}
