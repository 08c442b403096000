/**
 * `seed [--dry-run] [--rerun-changed]`: applies seeds not yet in seed_history,
 * each in a transaction with its history row (SPEC §5).
 */

import type { CommandContext } from "./context.ts";
import { openSession, took } from "./session.ts";
import { listSeeds, recordSeedSql } from "../db/history.ts";
import { errorLocation } from "../engine/positions.ts";
import { DatabaseError, DriftError, InterruptedError } from "../errors.ts";
import { assertDbDir, discoverSeeds, type Seed } from "../files/discover.ts";

/** Runs `seed`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  await assertDbDir(ctx.config.dir);
  const seeds = await discoverSeeds(ctx.config.dir);
  const dryRun = options.dryRun === true;
  const rerun = options.rerunChanged === true;
  const session = await openSession(ctx, { write: !dryRun });
  const seeded: { name: string; durationMs: number }[] = [];
  try {
    const applied = new Map(
      (await listSeeds(session.sql, session.tables)).map((s) => [s.name, s]),
    );
    const changed = seeds.filter((s) => {
      const a = applied.get(s.name);
      return a !== undefined && a.checksum !== s.checksum;
    });
    if (changed.length > 0 && !rerun) {
      throw new DriftError(
        `Seed "${changed[0].path}" changed after it was applied${
          changed.length > 1 ? ` (and ${changed.length - 1} more)` : ""
        }: run "managed-migrate seed --rerun-changed" to apply it again, or put the change in a new seed file`,
        changed.map((s) => ({ name: s.name, state: "changed" })),
      );
    }
    const todo = seeds.filter((s) =>
      !applied.has(s.name) || changed.includes(s)
    );
    const skipped = seeds.filter((s) => !todo.includes(s)).map((s) => ({
      name: s.name,
    }));
    if (dryRun) {
      ctx.reporter.result(
        {
          seeded: [],
          pending: todo.map((s) => ({ name: s.name, sql: s.sql })),
          skipped,
          backup: null,
          findings: [],
          dryRun,
        },
        () =>
          todo.length === 0 ? "Dry run: no seeds to apply" : [
            `Dry run: ${todo.length} seed${
              todo.length === 1 ? "" : "s"
            } would run; nothing was changed`,
            ...todo.flatMap((s) => ["", `-- ${s.name}`, s.sql.trimEnd()]),
          ].join("\n"),
      );
      return 0;
    }
    for (const seed of todo) {
      ctx.signal.throwIfAborted();
      ctx.reporter.info(`Seeding ${seed.name}`);
      const durationMs = await applySeed(
        ctx,
        session.sql,
        seed,
        session.tables,
      );
      seeded.push({ name: seed.name, durationMs: Math.round(durationMs) });
      ctx.reporter.info(`Seeded ${seed.name} ${took(durationMs)}`);
    }
    ctx.reporter.result(
      { seeded, skipped, backup: null, findings: [], dryRun },
      () =>
        todo.length === 0
          ? "Seeds up to date"
          : `Seeded ${seeded.length} file${seeded.length === 1 ? "" : "s"}`,
    );
    return 0;
  } catch (error) {
    if (error instanceof DatabaseError && seeded.length > 0) {
      (error.details as Record<string, unknown>).seeded = seeded;
    }
    throw error;
  } finally {
    await session.close();
  }
}

async function applySeed(
  ctx: CommandContext,
  sql: import("../db/connect.ts").Sql,
  seed: Seed,
  tables: import("../db/history.ts").HistoryTables,
): Promise<number> {
  await sql.unsafe("BEGIN");
  const started = performance.now();
  const query = sql.unsafe(seed.sql);
  const cancel = () => query.cancel();
  ctx.signal.addEventListener("abort", cancel);
  try {
    await query;
    const durationMs = performance.now() - started;
    await sql.unsafe(
      `${
        recordSeedSql(tables, {
          name: seed.name,
          checksum: seed.checksum,
          durationMs,
        })
      }; COMMIT`,
    );
    return durationMs;
  } catch (error) {
    await sql.unsafe("ROLLBACK").catch(() => {});
    const e = error as { code?: string; message?: string; position?: string };
    if (ctx.signal.aborted) {
      throw new InterruptedError(
        `Interrupted while seeding "${seed.name}": its transaction was rolled back`,
      );
    }
    const where = errorLocation(seed.sql, 0, e.position);
    throw new DatabaseError(
      `Cannot apply seed "${seed.name}": ${e.message} at ${seed.path}${
        where ? `:${where.line}:${where.column}` : ""
      }`,
      {
        sqlstate: e.code,
        file: seed.path,
        line: where?.line,
        column: where?.column,
      },
    );
  } finally {
    ctx.signal.removeEventListener("abort", cancel);
  }
}
