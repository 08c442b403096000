/**
 * Scans `managed-migrations/` and `managed-seeds/`: names, pairing, SHA-256
 * checksums and numeric order. Every problem is a MigrationFilesError naming
 * the file (golang-migrate `source/parse.go`).
 */

import { createHash } from "node:crypto";
import { MigrationFilesError } from "../errors.ts";
import { type Directives, parseDirectives } from "./directives.ts";

/** One paired migration, read from disk. */
export interface Migration {
  /** Digits only; ordered numerically. */
  version: string;
  name: string;
  /** `<version>_<name>`, the file stem. */
  id: string;
  upPath: string;
  downPath: string;
  upSql: string;
  downSql: string;
  /** SHA-256 (hex) of the up file's bytes. */
  checksum: string;
  up: Directives;
  down: Directives;
}

/** One seed file. */
export interface Seed {
  name: string;
  path: string;
  sql: string;
  checksum: string;
}

/** Subdirectory names inside the db directory. */
export const MIGRATIONS_DIR = "managed-migrations";
export const SEEDS_DIR = "managed-seeds";

const MIGRATION_FILE = /^(\d+)_([A-Za-z0-9_-]+)\.(up|down)\.sql$/;
const SEED_FILE = /^[A-Za-z0-9_.-]+\.sql$/;

/** Joins path parts with `/` (the binary runs on POSIX hosts). */
export function joinPath(...parts: string[]): string {
  return parts.join("/").replace(/\/+/g, "/");
}

/** Hex SHA-256 of some bytes (synchronous: thousands of small files hash faster than with WebCrypto). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Compares two digit strings numerically without precision loss. */
export function compareVersions(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

async function listSqlFiles(dir: string): Promise<string[] | undefined> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.startsWith(".")) continue;
      if (!entry.name.toLowerCase().endsWith(".sql")) continue;
      if (!entry.isFile && !entry.isSymlink) continue;
      names.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new MigrationFilesError(
      `Cannot read directory "${dir}": ${(error as Error).message}`,
      dir,
    );
  }
  return names.sort();
}

const decoder = new TextDecoder("utf-8", { fatal: true });

function readSqlFile(path: string): { text: string; checksum: string } {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (error) {
    throw new MigrationFilesError(
      `Cannot read "${path}": ${(error as Error).message}`,
      path,
    );
  }
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new MigrationFilesError(
      `Invalid file "${path}": not valid UTF-8; save it as UTF-8`,
      path,
      "not valid UTF-8",
    );
  }
  return { text: text.replace(/^\uFEFF/, ""), checksum: sha256Hex(bytes) };
}

function directivesOf(path: string, sql: string): Directives {
  const { directives, problems } = parseDirectives(sql);
  if (problems.length > 0) {
    const p = problems[0];
    throw new MigrationFilesError(
      `Invalid directive in "${path}" line ${p.line}: ${p.message}`,
      path,
      p.message,
    );
  }
  return directives;
}

/**
 * Reads every migration pair in `<dir>/managed-migrations`, sorted by version.
 * A missing directory means no migrations. Throws MigrationFilesError (exit 4)
 * for a misnamed .sql file, a duplicate version, an unpaired file or bad UTF-8.
 */
export async function discoverMigrations(dir: string): Promise<Migration[]> {
  const migrationsDir = joinPath(dir, MIGRATIONS_DIR);
  const names = await listSqlFiles(migrationsDir);
  if (names === undefined) return [];

  const pairs = new Map<
    string,
    { version: string; name: string; up?: string; down?: string }
  >();
  const byVersion = new Map<string, string>();
  for (const fileName of names) {
    const path = joinPath(migrationsDir, fileName);
    const match = MIGRATION_FILE.exec(fileName);
    if (!match) {
      throw new MigrationFilesError(
        `Invalid migration file name "${path}": expected <version>_<name>.up.sql or <version>_<name>.down.sql (version: digits; name: letters, digits, _ or -)`,
        path,
        "invalid file name",
      );
    }
    const [, version, name, direction] = match;
    const id = `${version}_${name}`;
    const normalized = BigInt(version).toString();
    const other = byVersion.get(normalized);
    if (other !== undefined && other !== id) {
      throw new MigrationFilesError(
        `Duplicate migration version ${version} in "${path}": "${other}" has it too; give one of them a new version`,
        path,
        "duplicate version",
      );
    }
    byVersion.set(normalized, id);
    const pair = pairs.get(id) ?? { version, name };
    pair[direction as "up" | "down"] = path;
    pairs.set(id, pair);
  }

  for (const [id, pair] of pairs) {
    if (!pair.up || !pair.down) {
      const have = (pair.up ?? pair.down)!;
      const missing = joinPath(
        migrationsDir,
        `${id}.${pair.up ? "down" : "up"}.sql`,
      );
      throw new MigrationFilesError(
        `Unpaired migration "${have}": "${missing}" is missing; every migration needs both an up and a down file`,
        have,
        "unpaired",
      );
    }
  }
  // Synchronous reads: for thousands of small files they are several times
  // faster than awaiting one read after another.
  const migrations = [...pairs].map(([id, pair]): Migration => {
    const up = readSqlFile(pair.up!);
    const down = readSqlFile(pair.down!);
    return {
      version: pair.version,
      name: pair.name,
      id,
      upPath: pair.up!,
      downPath: pair.down!,
      upSql: up.text,
      downSql: down.text,
      checksum: up.checksum,
      up: directivesOf(pair.up!, up.text),
      down: directivesOf(pair.down!, down.text),
    };
  });
  return migrations.sort((a, b) => compareVersions(a.version, b.version));
}

/** Reads every seed in `<dir>/managed-seeds`, in file-name order. */
export async function discoverSeeds(dir: string): Promise<Seed[]> {
  const seedsDir = joinPath(dir, SEEDS_DIR);
  const names = await listSqlFiles(seedsDir);
  if (names === undefined) return [];
  const seeds: Seed[] = [];
  for (const fileName of names) {
    const path = joinPath(seedsDir, fileName);
    if (!SEED_FILE.test(fileName)) {
      throw new MigrationFilesError(
        `Invalid seed file name "${path}": use letters, digits, _, - and . only`,
        path,
        "invalid file name",
      );
    }
    const { text, checksum } = readSqlFile(path);
    seeds.push({
      name: fileName.replace(/\.sql$/i, ""),
      path,
      sql: text,
      checksum,
    });
  }
  return seeds;
}

/** Checks that the db directory exists, so a typo in --dir is not "nothing to do". */
export async function assertDbDir(dir: string): Promise<void> {
  try {
    const info = await Deno.stat(dir);
    if (!info.isDirectory) {
      throw new MigrationFilesError(`"${dir}" is not a directory`, dir);
    }
  } catch (error) {
    if (error instanceof MigrationFilesError) throw error;
    throw new MigrationFilesError(
      `Cannot find the db directory "${dir}": pass --dir or create ${dir}/${MIGRATIONS_DIR}`,
      dir,
    );
  }
}
