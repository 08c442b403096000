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
  const command = new CommandBuilder().command([path, ...args])
    .env(pgEnv(info))
    .stdin("null")
    .stdout(options.stdout ?? "null")
    .stderr("piped")
    .noThrow();
  let result;
  // Our own abort listener on the spawned child: an abort that lands while
  // dax is still starting the process must kill it too, or a pg_dump waiting
  // on a table lock would wait for ever.
  const child = command.spawn();
  const kill = () => child.kill("SIGTERM");
  signal?.addEventListener("abort", kill, { once: true });
  if (signal?.aborted) kill();
  try {
    result = await child;
  } catch (error) {
    signal?.throwIfAborted();
    throw startError(tool, path, error, options.what);
  } finally {
    signal?.removeEventListener("abort", kill);
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

/** One side of pipePgTools(). */
export interface PipeSide {
  tool: PgTool;
  /** Path of the binary, from findPgTool(). */
  path: string;
  args: string[];
}

type DaxStdin = Parameters<
  InstanceType<typeof import("dax").CommandBuilder>["stdin"]
>[0];

/** Options of pipePgTools(). */
export interface PipePgToolsOptions {
  /** Writes a script to stdout (e.g. `pg_restore --file=-`). */
  producer: PipeSide;
  /** Reads it on stdin (e.g. `psql --single-transaction --file=-`). */
  consumer: PipeSide;
  info: ConnectionInfo;
  /**
   * Sent to the consumer after the producer's output, only when the producer
   * exited 0: the consumer can refuse to commit without it, so a producer
   * that dies halfway never leaves a partial result (end of input alone
   * would look like success to psql).
   */
  trailer: string;
  signal?: AbortSignal;
  /** Prefix of the error message. */
  what: string;
}

/**
 * Runs `producer | consumer` with `set -o pipefail` semantics and more:
 * both get the libpq environment of `info` (never argv), stderr of each is
 * captured, the consumer sees `trailer` only after the producer succeeded,
 * and a failure of either side is one ToolError: the producer's when it
 * failed by itself (a truncated archive: the consumer's error is then only a
 * consequence), else the consumer's. A consumer that exits early stops the
 * producer.
 */
export async function pipePgTools(options: PipePgToolsOptions): Promise<void> {
  const { CommandBuilder } = await import("dax");
  const { producer, consumer, info, signal } = options;
  signal?.throwIfAborted();
  const env = pgEnv(info);
  const producerCommand = new CommandBuilder()
    .command([producer.path, ...producer.args])
    .env(env).stdin("null").stdout("piped").stderr("piped").noThrow();
  let producerChild: ReturnType<typeof producerCommand.spawn>;
  try {
    producerChild = producerCommand.spawn();
  } catch (error) {
    throw startError(producer.tool, producer.path, error, options.what);
  }
  // Our own abort listener, as in runPgTool(): an abort that lands while a
  // child starts must still kill it.
  let consumerChild: ReturnType<typeof producerCommand.spawn> | undefined;
  const kill = () => {
    producerChild.kill("SIGTERM");
    consumerChild?.kill("SIGTERM");
  };
  signal?.addEventListener("abort", kill, { once: true });
  try {
    return await runPipe();
  } finally {
    signal?.removeEventListener("abort", kill);
  }

  async function runPipe(): Promise<void> {
    let producerDone = false;
    const produced = producerChild.then(
      (result) => ({ ok: true as const, result }),
      (error: unknown) => ({ ok: false as const, error }),
    ).finally(() => producerDone = true);
    const output = producerChild.stdout();
    const trailer = new TextEncoder().encode(options.trailer);
    async function* feed(): AsyncGenerator<Uint8Array> {
      const reader = output.getReader();
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          yield value;
        }
      } finally {
        reader.releaseLock();
      }
      const outcome = await produced;
      if (outcome.ok && outcome.result.code === 0) yield trailer;
    }
    const consumerCommand = new CommandBuilder()
      .command([consumer.path, ...consumer.args])
      // Deno's and dax's (Node) ReadableStream types differ, not the objects.
      .env(env).stdin(ReadableStream.from(feed()) as unknown as DaxStdin)
      .stdout("null")
      .stderr("piped").noThrow();
    let consumed;
    try {
      consumerChild = consumerCommand.spawn();
      if (signal?.aborted) kill();
      consumed = await consumerChild;
    } catch (error) {
      producerChild.kill();
      await produced;
      signal?.throwIfAborted();
      throw startError(consumer.tool, consumer.path, error, options.what);
    }
    // A consumer that stopped early (an error in the script) no longer reads:
    // stop the producer rather than leave it blocked on a full pipe.
    const stopped = consumed.code !== 0 && !producerDone;
    if (stopped) producerChild.kill();
    await output.cancel().catch(() => {});
    const outcome = await produced;
    signal?.throwIfAborted();
    if (!outcome.ok) {
      if (stopped) {
        throw toolFailure(
          consumer.tool,
          consumed.code,
          consumed.stderr,
          options,
        );
      }
      throw startError(
        producer.tool,
        producer.path,
        outcome.error,
        options.what,
      );
    }
    const producerFailed = !stopped && outcome.result.code !== 0;
    if (consumed.code !== 0 && !producerFailed) {
      throw toolFailure(consumer.tool, consumed.code, consumed.stderr, options);
    }
    if (producerFailed) {
      throw toolFailure(
        producer.tool,
        outcome.result.code,
        outcome.result.stderr,
        options,
      );
    }
  }
}

function toolFailure(
  tool: PgTool,
  code: number,
  stderr: string,
  options: { what?: string },
): ToolError {
  const tail = stderrTail(stderr);
  return new ToolError(
    `${options.what ?? `Cannot run ${tool}`}: ${tool} exited with code ${code}${
      tail ? `: ${tail}` : ""
    }`,
    { tool, exitCode: code, stderrTail: tail },
  );
}
