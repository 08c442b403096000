/**
 * Runs the PostgreSQL client binaries (pg_dump, psql, pg_restore) through
 * dax. Credentials reach the child only through its environment (PGPASSWORD
 * and friends), never its argv; a failure is one ToolError line carrying the
 * tool's own last stderr lines, redacted (amacneil/dbmate `RunCommand`).
 */

import type { ConnectionInfo } from "../config.ts";
import { ToolError } from "../errors.ts";
import { redactText } from "../redact.ts";

/** The client binaries this tool runs. */
export type PgTool = "pg_dump" | "psql" | "pg_restore";

/** Options of runPgTool(). */
export interface RunPgToolOptions {
  tool: PgTool;
  /** Path of the binary, from findPgTool(). */
  path: string;
  args: string[];
  info: ConnectionInfo;
  /** Aborting sends SIGTERM to the child; runPgTool() then throws `signal.reason`. */
  signal?: AbortSignal;
  /** What the child's stdout becomes (default: discarded). */
  stdout?: "null" | "piped";
  /** Prefix of the error message, e.g. `Cannot back up "x"`. */
  what?: string;
}

/** What a successful run printed. */
export interface PgToolOutput {
  stdout: string;
  stderr: string;
}

/** libpq variables that could point the child somewhere else than `info`. */
const CONFLICTING_LIBPQ_VARS = [
  "PGHOSTADDR",
  "PGSERVICE",
  "PGSERVICEFILE",
  "PGREQUIRESSL",
];

/**
 * The child's libpq environment for `info`. The password goes only here
 * (never argv, where any local user can read it in /proc/<pid>/cmdline).
 */
export function pgEnv(
  info: ConnectionInfo,
): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {
    PGHOST: info.host,
    PGPORT: String(info.port),
    PGUSER: info.user,
    PGDATABASE: info.database,
    PGPASSWORD: info.password,
    PGSSLMODE: info.sslmode,
    PGAPPNAME: "managed-migrate",
    // Connection URLs in argv are never used, so PGCONNECT_TIMEOUT keeps a
    // dead host from hanging the run forever.
    PGCONNECT_TIMEOUT: Deno.env.get("PGCONNECT_TIMEOUT") ?? "10",
  };
  for (const name of CONFLICTING_LIBPQ_VARS) env[name] = undefined;
  return env;
}

/** The hint every "missing tool" message ends with. */
function installHint(tool: PgTool): string {
  return `install the PostgreSQL client matching the server (it provides ${tool}), or pass --pg-bin DIR (env PG_BIN)`;
}

/**
 * Finds a client binary: in `pgBin` when given (--pg-bin / PG_BIN), else on
 * PATH. Throws a one-line ToolError naming the tool and the fix when absent.
 */
export async function findPgTool(
  tool: PgTool,
  pgBin?: string,
): Promise<string> {
  if (pgBin) {
    const path = `${pgBin.replace(/\/+$/, "")}/${tool}`;
    if (await isExecutable(path)) return path;
    throw new ToolError(
      `Cannot run ${tool}: "${path}" does not exist or is not executable: ${
        installHint(tool)
      }`,
      { tool },
    );
  }
  const { default: $ } = await import("dax");
  const found = await $.which(tool);
  if (found) return found;
  throw new ToolError(
    `Cannot run ${tool}: not found on PATH: ${installHint(tool)}`,
    { tool },
  );
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const stat = await Deno.stat(path);
    return stat.isFile && ((stat.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Runs `path args...` with the libpq environment of `info`, stdin closed and
 * stderr captured. Resolves with the output on exit 0; otherwise throws a
 * ToolError (tool, exit code, stderr tail), or `signal.reason` when aborted.
 */
export async function runPgTool(
  options: RunPgToolOptions,
): Promise<PgToolOutput> {
  const { CommandBuilder } = await import("dax");
  const { tool, path, args, info, signal } = options;
  signal?.throwIfAborted();
  let command = new CommandBuilder().command([path, ...args])
    .env(pgEnv(info))
    .stdin("null")
    .stdout(options.stdout ?? "null")
    .stderr("piped")
    .noThrow();
  if (signal) command = command.signal(signal);
  let result;
  try {
    result = await command;
  } catch (error) {
    signal?.throwIfAborted();
    throw startError(tool, path, error, options.what);
  }
  signal?.throwIfAborted();
  const stderr = result.stderr;
  if (result.code !== 0) {
    const tail = stderrTail(stderr);
    throw new ToolError(
      `${
        options.what ?? `Cannot run ${tool}`
      }: ${tool} exited with code ${result.code}${tail ? `: ${tail}` : ""}`,
      { tool, exitCode: result.code, stderrTail: tail },
    );
  }
  return {
    stdout: options.stdout === "piped" ? result.stdout : "",
    stderr,
  };
}

/**
 * A tool that could not be started, as one line: a binary refused by the
 * compiled executable's --allow-run list says which directories it accepts.
 */
function startError(
  tool: PgTool,
  path: string,
  error: unknown,
  what = `Cannot run ${tool}`,
): ToolError {
  const message = error instanceof Error ? error.message : String(error);
  const name = error instanceof Error ? error.name : "";
  const why = /NotCapable|Requires run access/i.test(`${name} ${message}`)
    ? `"${path}" is not in this executable's --allow-run list: put the PostgreSQL client on PATH or in /usr/lib/postgresql/N/bin, or run from source with deno run -A`
    : `"${path}" could not be started: ${message.split("\n")[0]}`;
  return new ToolError(`${what}: ${redactText(why)}`, { tool });
}

/**
 * The last meaningful stderr lines of a tool as one redacted line: the lines
 * that say `error`/`FATAL` when there are any (psql and pg_restore follow
 * them with context lines), else the last ones.
 */
export function stderrTail(stderr: string, maxLines = 3): string {
  // Whitespace runs collapse: psql pads "ERROR:  column ..." with two spaces.
  const lines = stderr.split(/\r?\n/).map((line) =>
    line.replace(/\s+/g, " ").trim()
  ).filter((
    line,
  ) => line !== "");
  const errors = lines.filter((line) => /\b(error|fatal|panic)\b/i.test(line));
  const picked = (errors.length > 0 ? errors : lines).slice(-maxLines);
  const text = redactText(picked.join(" | "));
  return text.length > 600 ? `${text.slice(0, 597)}...` : text;
}

/** Major version of a client binary, from `<tool> --version` (e.g. 15 from "pg_dump (PostgreSQL) 15.14"). */
export async function pgToolMajorVersion(
  tool: PgTool,
  path: string,
): Promise<number> {
  const { CommandBuilder } = await import("dax");
  let result;
  try {
    result = await new CommandBuilder().command([path, "--version"])
      .stdin("null").stdout("piped").stderr("piped").noThrow();
  } catch (error) {
    throw startError(tool, path, error);
  }
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(result.stdout);
  if (result.code !== 0 || !match) {
    throw new ToolError(
      `Cannot run ${tool}: "${path} --version" failed (exit code ${result.code}): ${
        stderrTail(result.stderr || result.stdout) || "no version printed"
      }`,
      { tool, exitCode: result.code },
    );
  }
  return Number(match[1]);
}
