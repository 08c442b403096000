/**
 * `test [--ephemeral] [--from VERSION]`: proves every migration applies and
 * truly reverses (src/engine/round_trip.ts), against the target database
 * inside one rolled-back transaction, or on a throwaway server.
 */

import type { CommandContext } from "./context.ts";
import {
  type ConnectionInfo,
  humanDuration,
  parseConnectionUrl,
  resolveConnection,
} from "../config.ts";
import { connect, quoteIdent, type Sql } from "../db/connect.ts";
import { EXIT, UsageError } from "../errors.ts";
import {
  assertDbDir,
  compareVersions,
  discoverMigrations,
  discoverSeeds,
  type Migration,
} from "../files/discover.ts";
import {
  migrationFailed,
  type MigrationReport,
  roundTrip,
  type RoundTripResult,
} from "../engine/round_trip.ts";

/** Runs `test`; exit 0 when every migration round-trips and every seed applies, else 1. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  _args: string[],
): Promise<number> {
  const { config, reporter } = ctx;
  const from = options.from === undefined ? undefined : String(options.from);
  if (from !== undefined && !/^\d+$/.test(from)) {
    throw new UsageError(
      `Invalid --from "${from}": expected a migration version (digits only), like 202412010001`,
    );
  }
  await assertDbDir(config.dir);
  const all = await discoverMigrations(config.dir);
  const seeds = await discoverSeeds(config.dir);
  const earlier = from === undefined
    ? []
    : all.filter((m) => compareVersions(m.version, from) <= 0);
  const tested = all.filter((m) => !earlier.includes(m));
  const ephemeral = options.ephemeral === true;
  const started = performance.now();

  let result: RoundTripResult;
  if (ephemeral) {
    const { startEphemeralServer } = await import(
      "../pg_server/ephemeral.ts"
    );
    reporter.info("Starting a throwaway PostgreSQL server…");
    const server = await startEphemeralServer({
      binDir: config.pgBin,
      signal: ctx.signal,
    });
    // A second Ctrl-C exits at once: the server must not outlive us.
    const onUnload = () => server.stopSync();
    globalThis.addEventListener("unload", onUnload);
    try {
      reporter.info(
        `Testing ${tested.length} migration(s) on a throwaway PostgreSQL ${server.version} server`,
      );
      result = await withClient(
        parseConnectionUrl(server.url),
        (sql) => runChecks(ctx, sql, earlier, tested, seeds, "commit"),
      );
    } finally {
      globalThis.removeEventListener("unload", onUnload);
      await server.stop();
    }
  } else {
    const info = resolveConnection(config.databaseUrl);
    reporter.info(
      `Testing ${tested.length} migration(s) on ${info.display} inside one transaction that is rolled back`,
    );
    result = await withClient(info, async (sql) => {
      const applied = await appliedVersions(sql, config.historySchema);
      if (from === undefined && applied.size > 0) {
        reporter.warn(
          `${applied.size} migration(s) are already applied to this database: their up will run again and may fail; test a fresh database, or pass --from with the last applied version`,
        );
      }
      // With --from, skip the earlier migrations this database already has.
      const prepare = earlier.filter((m) =>
        !applied.has(BigInt(m.version).toString())
      );
      return runChecks(ctx, sql, prepare, tested, seeds, "rollback");
    });
  }
  const durationMs = Math.round(performance.now() - started);
  report(ctx, result, {
    ephemeral,
    durationMs,
    skippedEarlier: earlier.length,
  });
  return result.ok ? EXIT.OK : EXIT.FAILURE;
}

async function withClient<T>(
  info: ConnectionInfo,
  body: (sql: Sql) => Promise<T>,
): Promise<T> {
  // Notices (RAISE NOTICE in DO blocks) would repeat three times per migration.
  const sql = await connect(info, { applicationName: "managed-migrate test" });
  try {
    return await body(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function runChecks(
  ctx: CommandContext,
  sql: Sql,
  prepare: Migration[],
  tested: Migration[],
  seeds: Awaited<ReturnType<typeof discoverSeeds>>,
  mode: "rollback" | "commit",
): Promise<RoundTripResult> {
  const progress = await ctx.reporter.progress("Testing");
  try {
    return await roundTrip(sql, tested, seeds, {
      mode,
      historySchema: ctx.config.historySchema,
      prepare,
      signal: ctx.signal,
      onProgress: (done, total, current) =>
        progress.message(`${done}/${total} ${current}`),
    });
  } finally {
    progress.finish();
  }
}

/** Versions recorded as applied in the history table, if it exists (normalised digits). */
async function appliedVersions(
  sql: Sql,
  schema: string,
): Promise<Set<string>> {
  const table = `${quoteIdent(schema)}.managed_migrations`;
  const [{ exists }] = await sql<{ exists: boolean }[]>`
    select to_regclass(${table}) is not null as exists`;
  if (!exists) return new Set();
  const rows = await sql.unsafe<{ version: string }[]>(
    `select version from ${table} where state is distinct from 'running'`,
  );
  return new Set(rows.map((r) => BigInt(r.version).toString()));
}

function statusLine(ctx: CommandContext, r: MigrationReport): string {
  const { reporter } = ctx;
  const id = `${r.version}_${r.name}`;
  const ok = reporter.paint("✓", "32");
  const bad = reporter.paint("✗", "31");
  if (r.up === "skipped") {
    return `${reporter.paint("-", "2")} ${id}: not run (an earlier up failed)`;
  }
  if (r.up === "failed") return `${bad} ${id}: up failed: ${r.error}`;
  if (r.down === "irreversible") {
    return `${ok} ${id} (irreversible: down not run)`;
  }
  if (r.down === "failed") return `${bad} ${id}: down failed: ${r.error}`;
  if (r.roundTrip === "failed") {
    return `${bad} ${id}: down does not restore the schema${
      r.error ? ` (${r.error})` : ""
    }`;
  }
  if (r.upAgain === "failed") return `${bad} ${id}: ${r.error}`;
  return `${ok} ${id}`;
}

function truncate(line: string, max = 240): string {
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function report(
  ctx: CommandContext,
  result: RoundTripResult,
  extra: { ephemeral: boolean; durationMs: number; skippedEarlier: number },
): void {
  const { reporter, config } = ctx;
  const failed = result.migrations.filter(migrationFailed);
  const doc = {
    migrations: result.migrations.map((r) => ({
      version: r.version,
      name: r.name,
      up: r.up,
      down: r.down,
      roundTrip: r.roundTrip,
      upAgain: r.upAgain,
      diff: r.diff,
      ...(r.error ? { error: r.error } : {}),
      notes: r.notes,
      durationMs: r.durationMs,
    })),
    seeds: result.seeds,
    prepared: result.prepared,
    ephemeral: extra.ephemeral,
    durationMs: extra.durationMs,
    ok: result.ok,
  };
  reporter.result(doc, () => {
    const out: string[] = [];
    if (extra.skippedEarlier > 0) {
      out.push(
        `Applied ${result.prepared.length} migration(s) up to --from without checks${
          result.prepared.length < extra.skippedEarlier
            ? ` (${
              extra.skippedEarlier - result.prepared.length
            } already applied)`
            : ""
        }`,
      );
    }
    for (const r of result.migrations) {
      out.push(statusLine(ctx, r));
      for (const line of r.diff) out.push(`    ${truncate(line)}`);
      if (!config.quiet) {
        for (const note of r.notes) {
          out.push(`    ${reporter.paint(`note: ${note}`, "2")}`);
        }
      }
    }
    for (const s of result.seeds) {
      const mark = s.status === "ok"
        ? reporter.paint("✓", "32")
        : s.status === "failed"
        ? reporter.paint("✗", "31")
        : reporter.paint("-", "2");
      out.push(
        `${mark} seed ${s.name}${
          s.status === "failed"
            ? `: ${s.error}`
            : s.status === "skipped"
            ? ": not run"
            : ""
        }`,
      );
    }
    const tested = result.migrations.filter((r) => r.up !== "skipped").length;
    const seedsFailed = result.seeds.filter((s) => s.status === "failed");
    const summary = result.migrations.length === 0 && result.seeds.length === 0
      ? "No migrations or seeds to test"
      : `${
        result.ok ? "ok" : "FAILED"
      }: ${tested} of ${result.migrations.length} migration(s) tested, ${failed.length} failed${
        failed.length > 0
          ? ` (${failed.map((r) => `${r.version}_${r.name}`).join(", ")})`
          : ""
      }; ${result.seeds.length} seed(s), ${seedsFailed.length} failed; ${
        humanDuration(extra.durationMs)
      }${extra.ephemeral ? " on a throwaway server" : ", rolled back"}`;
    out.push(summary);
    return out.join("\n");
  });
}
