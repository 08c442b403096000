/** `status [--check]`: every migration and seed with its state (SPEC §5). */

import type { CommandContext } from "./context.ts";
import { loadStatus, openSession, readMigrations } from "./session.ts";
import { listSeeds } from "../db/history.ts";
import { discoverSeeds } from "../files/discover.ts";
import { driftOf } from "../engine/plan.ts";
import { EXIT } from "../errors.ts";

/** Runs `status`. Returns 5 under --check when anything is pending or drifted. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  const migrations = await readMigrations(ctx);
  const seedFiles = await discoverSeeds(ctx.config.dir);
  const session = await openSession(ctx, { write: false });
  try {
    const rows = await loadStatus(session, migrations);
    const appliedSeeds = new Map(
      (await listSeeds(session.sql, session.tables)).map((s) => [s.name, s]),
    );
    const seeds = seedFiles.map((s) => {
      const a = appliedSeeds.get(s.name);
      appliedSeeds.delete(s.name);
      return {
        name: s.name,
        state: !a
          ? "pending"
          : a.checksum === s.checksum
          ? "applied"
          : "changed",
        appliedAt: a?.appliedAt ?? null,
      };
    });
    for (const a of appliedSeeds.values()) {
      seeds.push({ name: a.name, state: "missing", appliedAt: a.appliedAt });
    }
    const pending = rows.filter((r) => r.state === "pending").length;
    const drifted = driftOf(rows).length +
      seeds.filter((s) => s.state === "changed" || s.state === "missing")
        .length;
    const migrationsJson = rows.map((r) => ({
      version: r.version,
      name: r.name,
      state: r.state,
      appliedAt: r.appliedAt?.toISOString() ?? null,
      durationMs: r.durationMs,
    }));
    const seedsJson = seeds.map((s) => ({
      name: s.name,
      state: s.state,
      appliedAt: s.appliedAt?.toISOString() ?? null,
    }));
    ctx.reporter.result(
      { migrations: migrationsJson, seeds: seedsJson },
      () => {
        const table = [["VERSION", "NAME", "STATE", "APPLIED AT"]];
        for (const r of migrationsJson) {
          table.push([r.version, r.name, r.state, r.appliedAt ?? "-"]);
        }
        const lines = formatTable(table, (state) => paintState(ctx, state));
        if (seedsJson.length > 0) {
          lines.push("");
          lines.push(
            ...formatTable(
              [
                ["SEED", "STATE", "APPLIED AT"],
                ...seedsJson.map((s) => [s.name, s.state, s.appliedAt ?? "-"]),
              ],
              (state) => paintState(ctx, state),
            ),
          );
        }
        lines.push(
          "",
          `${
            rows.length - pending - driftOf(rows).length
          } applied, ${pending} pending, ${drifted} drifted`,
        );
        return lines.join("\n");
      },
    );
    if (options.check === true && (pending > 0 || drifted > 0)) {
      return EXIT.CHECK_FAILED;
    }
    return EXIT.OK;
  } finally {
    await session.close();
  }
}

function paintState(ctx: CommandContext, state: string): string {
  const r = ctx.reporter;
  switch (state) {
    case "applied":
      return r.paint(state, "32");
    case "pending":
      return r.paint(state, "33");
    case "STATE":
      return state;
    default:
      return r.paint(state, "31");
  }
}

/** Left-aligned columns; the STATE column is painted. */
function formatTable(rows: string[][], paint: (s: string) => string): string[] {
  const widths = rows[0].map((_, i) =>
    Math.max(...rows.map((r) => r[i].length))
  );
  const stateColumn = rows[0].indexOf("STATE");
  return rows.map((r) =>
    r.map((cell, i) => {
      const padded = i === r.length - 1 ? cell : cell.padEnd(widths[i]);
      return i === stateColumn
        ? paint(cell) + padded.slice(cell.length)
        : padded;
    }).join("  ").trimEnd()
  );
}
