/**
 * Pure planning: files + history → states, drift, pending and rollback steps.
 * No I/O here, so every rule of SPEC §5 is testable without a server.
 */

import type { AppliedMigration } from "../db/history.ts";
import { DriftError, MigrationFilesError, UsageError } from "../errors.ts";
import { compareVersions, type Migration } from "../files/discover.ts";

/** A migration's state as `status` shows it. */
export type MigrationState =
  | "applied"
  | "pending"
  | "changed"
  | "missing"
  | "running";

/** One line of `status`: a file, a history row, or both. */
export interface MigrationStatus {
  version: string;
  name: string;
  state: MigrationState;
  appliedAt: Date | null;
  durationMs: number | null;
  migration?: Migration;
  applied?: AppliedMigration;
}

/** Joins files and history by version, oldest first. */
export function migrationStatus(
  files: Migration[],
  applied: AppliedMigration[],
): MigrationStatus[] {
  const rows = new Map<string, MigrationStatus>();
  const byVersion = new Map(applied.map((a) => [normalize(a.version), a]));
  for (const m of files) {
    const a = byVersion.get(normalize(m.version));
    byVersion.delete(normalize(m.version));
    const state: MigrationState = !a
      ? "pending"
      : a.state === "running"
      ? "running"
      : a.checksum !== m.checksum
      ? "changed"
      : "applied";
    rows.set(normalize(m.version), {
      version: m.version,
      name: m.name,
      state,
      appliedAt: a?.appliedAt ?? null,
      durationMs: a?.durationMs ?? null,
      migration: m,
      applied: a,
    });
  }
  for (const [key, a] of byVersion) {
    rows.set(key, {
      version: a.version,
      name: a.name,
      state: a.state === "running" ? "running" : "missing",
      appliedAt: a.appliedAt,
      durationMs: a.durationMs,
      applied: a,
    });
  }
  return [...rows.values()].sort((x, y) =>
    compareVersions(x.version, y.version)
  );
}

function normalize(version: string): string {
  return /^\d+$/.test(version) ? BigInt(version).toString() : version;
}

/** The rows that drifted: changed, missing or left running. */
export function driftOf(rows: MigrationStatus[]): MigrationStatus[] {
  return rows.filter((r) =>
    r.state === "changed" || r.state === "missing" || r.state === "running"
  );
}

/** Throws DriftError (exit 4) when any applied migration drifted, naming the fix. */
export function assertNoDrift(rows: MigrationStatus[]): void {
  const drift = driftOf(rows);
  if (drift.length === 0) return;
  const first = drift[0];
  const id = `${first.version}_${first.name}`;
  const more = drift.length > 1 ? ` (and ${drift.length - 1} more)` : "";
  const details = drift.map((d) => ({
    version: d.version,
    name: d.name,
    state: d.state,
  }));
  switch (first.state) {
    case "running":
      throw new DriftError(
        `Migration "${id}" was left running by an interrupted no-transaction run${more}: check the database, then run "managed-migrate repair ${first.version} --applied" if its changes are all there, or "managed-migrate repair ${first.version} --rolled-back" after undoing them`,
        details,
      );
    case "changed":
      throw new DriftError(
        `Applied migration "${id}" was changed after it ran${more}: its checksum differs from the history; restore the file as it was applied and put the change in a new migration`,
        details,
      );
    default:
      throw new DriftError(
        `Applied migration "${id}" has no file in ${"managed-migrations"}${more}: restore the file, or roll the database back to before it`,
        details,
      );
  }
}

/** Finds a migration by version (`202412010001`) or full id (`202412010001_name`). */
export function resolveTarget(
  files: Migration[],
  applied: AppliedMigration[],
  target: string,
): string {
  const t = target.trim();
  const match = /^(\d+)(?:_([A-Za-z0-9_-]+))?$/.exec(t);
  if (!match) {
    throw new UsageError(
      `Invalid version "${target}": expected digits, like 202412010001, or a migration id like 202412010001_add_users`,
    );
  }
  const version = normalize(match[1]);
  const known = [
    ...files.map((f) => ({ version: f.version, name: f.name })),
    ...applied.map((a) => ({ version: a.version, name: a.name })),
  ].find((x) => normalize(x.version) === version);
  if (!known || (match[2] !== undefined && known.name !== match[2])) {
    throw new UsageError(
      `No migration "${target}": run "managed-migrate status" to list the versions`,
    );
  }
  return known.version;
}

/** The migrations `migrate` would apply, oldest first, up to and including `to`. */
export function pendingMigrations(
  rows: MigrationStatus[],
  to?: string,
): Migration[] {
  return rows
    .filter((r) => r.state === "pending")
    .filter((r) => to === undefined || compareVersions(r.version, to) <= 0)
    .map((r) => r.migration!);
}

/** Options for rollbackSteps(). */
export interface RollbackSelection {
  steps?: number;
  /** Roll back every applied migration newer than this version. */
  to?: string;
}

/**
 * The migrations `rollback` would undo, newest first. Throws when one of
 * them has no file (cannot run its down) or is irreversible (stops before it).
 */
export function rollbackSteps(
  rows: MigrationStatus[],
  selection: RollbackSelection,
): Migration[] {
  const applied = rows.filter((r) => r.applied !== undefined).reverse();
  const chosen = selection.to !== undefined
    ? applied.filter((r) => compareVersions(r.version, selection.to!) > 0)
    : applied.slice(0, selection.steps ?? 1);
  for (const r of chosen) {
    if (!r.migration) {
      throw new MigrationFilesError(
        `Cannot roll back "${r.version}_${r.name}": its files are missing from managed-migrations; restore them first`,
        `${r.version}_${r.name}`,
        "missing",
      );
    }
    if (r.migration.down.irreversible) {
      throw new MigrationFilesError(
        `Cannot roll back "${r.migration.id}": it is marked irreversible in "${r.migration.downPath}"; restore a backup instead, or write its down migration`,
        r.migration.downPath,
        "irreversible",
      );
    }
  }
  return chosen.map((r) => r.migration!);
}
