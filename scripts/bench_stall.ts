/**
 * `deno task bench:stall`: what application traffic feels while a migration
 * meets a long blocker. Steady pgbench reads on a 100k-row table; a blocker
 * holds a conflicting lock for 8 s; `ALTER TABLE ... ADD COLUMN` arrives 1 s
 * into it. Three ways of applying the same migration, one run each:
 *
 * - managed-migrate with default settings (waits without queueing);
 * - plain `ALTER` with no lock_timeout (queues: traffic stalls for the blocker);
 * - `SET lock_timeout = '1s'` plus retries (queues up to 1 s per try).
 *
 * Prints the traffic's worst and p99 latency during the window, and how long
 * after the blocker ended the migration was applied. Timings are noisy on
 * shared machines: compare the rows of one run, not runs of different days.
 */

import postgres from "postgres";
import { startEphemeralServer } from "../src/pg_server/ephemeral.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BLOCK_MS = 8000;
const encoder = new TextEncoder();
const say = (s: string) => Deno.stdout.writeSync(encoder.encode(s + "\n"));

type Strategy =
  | "managed-migrate"
  | "no lock_timeout"
  | "lock_timeout 1s + retries";

async function pgbenchPath(binDir: string): Promise<string> {
  for (const dir of [binDir, "/usr/lib/postgresql/15/bin"]) {
    try {
      await Deno.stat(`${dir}/pgbench`);
      return `${dir}/pgbench`;
    } catch { /* next */ }
  }
  throw new Error(
    "pgbench not found: install the PostgreSQL client (postgresql-contrib / postgresql)",
  );
}

async function scenario(
  serverUrl: string,
  pgbench: string,
  strategy: Strategy,
) {
  const dbName = `stall_${Math.random().toString(36).slice(2, 8)}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${dbName}`);
  const url = serverUrl.replace(/\/postgres$/, `/${dbName}`);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  await sql.unsafe(
    `create table accounts (id int primary key, balance int not null default 0);
     insert into accounts select g, 0 from generate_series(1, 100000) g; analyze accounts`,
  );
  const dir = await Deno.makeTempDir({ prefix: "mm_stall_" });
  await Deno.mkdir(`${dir}/db/managed-migrations`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/db/managed-migrations/1_add_note.up.sql`,
    "ALTER TABLE accounts ADD COLUMN note text;\n",
  );
  await Deno.writeTextFile(
    `${dir}/db/managed-migrations/1_add_note.down.sql`,
    "-- managed-migrate: allow=drop-column\nALTER TABLE accounts DROP COLUMN note;\n",
  );
  await Deno.writeTextFile(
    `${dir}/read.sql`,
    "\\set id random(1, 100000)\nSELECT balance FROM accounts WHERE id = :id;\n",
  );
  const u = new URL(url);

  const totalSeconds = 14;
  const bench = new Deno.Command(pgbench, {
    args: [
      "-n",
      "-c",
      "4",
      "-j",
      "2",
      "-T",
      String(totalSeconds),
      "-f",
      "read.sql",
      "-l",
      "-h",
      u.hostname,
      "-p",
      u.port,
      "-U",
      "postgres",
      dbName,
    ],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 2000));

  const blocker = await sql.reserve();
  await blocker`begin`;
  await blocker`select count(*) from accounts where id < 10`;
  const blockStart = Date.now();
  const blockerDone = (async () => {
    await new Promise((r) => setTimeout(r, BLOCK_MS));
    await blocker`commit`;
    blocker.release();
    return Date.now();
  })();

  await new Promise((r) => setTimeout(r, 1000));
  let appliedAt = 0;
  if (strategy === "managed-migrate") {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        `${ROOT}main.ts`,
        "--dir",
        `${dir}/db`,
        "migrate",
        "--no-backup",
      ],
      env: { DATABASE_URL: url, NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
    appliedAt = Date.now();
  } else {
    const mig = await sql.reserve();
    if (strategy === "no lock_timeout") {
      await mig`alter table accounts add column note text`;
    } else {
      for (let attempt = 1;; attempt++) {
        try {
          await mig.unsafe(
            "begin; set local lock_timeout = '1s'; alter table accounts add column note text; commit",
          );
          break;
        } catch (e) {
          await mig.unsafe("rollback").catch(() => {});
          if ((e as { code?: string }).code !== "55P03" || attempt > 10) {
            throw e;
          }
          await new Promise((r) =>
            setTimeout(r, Math.min(10_000, 500 * 2 ** (attempt - 1)))
          );
        }
      }
    }
    mig.release();
    appliedAt = Date.now();
  }
  const blockEnd = await blockerDone;
  await bench.output();

  // pgbench -l: "client_id transaction_no time_us script_no time_epoch time_us_frac"
  const latencies: number[] = [];
  for await (const f of Deno.readDir(dir)) {
    if (!f.name.startsWith("pgbench_log")) continue;
    for (
      const line of (await Deno.readTextFile(`${dir}/${f.name}`)).split("\n")
    ) {
      const parts = line.trim().split(/\s+/);
      if (parts.length < 6) continue;
      const endMs = Number(parts[4]) * 1000 + Number(parts[5]) / 1000;
      if (endMs >= blockStart && endMs <= blockEnd + 3000) {
        latencies.push(Number(parts[2]) / 1000);
      }
    }
  }
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? NaN;
  const worst = latencies.at(-1) ?? NaN;
  await sql.end();
  await admin.unsafe(`drop database ${dbName} with (force)`);
  await admin.end();
  await Deno.remove(dir, { recursive: true });
  void t0;
  return {
    strategy,
    worst,
    p99,
    transactions: latencies.length,
    appliedAfterBlockerMs: appliedAt - blockEnd,
  };
}

/** Runs the three scenarios on one throwaway server and prints a table. */
export async function main(): Promise<void> {
  const server = await startEphemeralServer({});
  try {
    const pgbench = await pgbenchPath(server.binDir);
    say(
      `bench:stall on PostgreSQL ${server.version}: pgbench reads, 4 clients; blocker holds AccessShareLock for ${
        BLOCK_MS / 1000
      }s`,
    );
    say(
      "strategy                     worst ms   p99 ms   applied after blocker ended",
    );
    for (
      const s of [
        "managed-migrate",
        "lock_timeout 1s + retries",
        "no lock_timeout",
      ] as Strategy[]
    ) {
      const r = await scenario(server.url, pgbench, s);
      say(
        `${r.strategy.padEnd(28)} ${r.worst.toFixed(1).padStart(8)} ${
          r.p99.toFixed(1).padStart(8)
        }   ${
          (r.appliedAfterBlockerMs / 1000).toFixed(2)
        }s (${r.transactions} transactions in window)`,
      );
    }
  } finally {
    await server.stop();
  }
}

if (import.meta.main) await main();
