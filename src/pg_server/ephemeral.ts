/**
 * Throwaway PostgreSQL servers: initdb into a temp dir, start on a free
 * loopback port, stop and delete everything afterwards. Used by the test
 * harness, `deno task demo` and `managed-migrate test --ephemeral`.
 */

import { ToolError } from "../errors.ts";

/** Where a server's initdb/pg_ctl/postgres live and which major version they are. */
export interface ServerBinaries {
  binDir: string;
  version: number;
}

/** A running throwaway server. */
export interface EphemeralServer {
  /** Superuser URL to database `postgres` (trust auth, no password). */
  url: string;
  port: number;
  /** Server major version (15, 18, ...). */
  version: number;
  binDir: string;
  /** Stops the server and removes its data dir; safe to call twice. */
  stop(): Promise<void>;
  /** The same as stop(), synchronously (for `unload` handlers). */
  stopSync(): void;
  /** `pg_ctl restart -m fast`: every session is cut, as in a failover (tests use it). */
  restart(): Promise<void>;
}

/** Options for startEphemeralServer(). */
export interface EphemeralOptions {
  /** Directory of initdb/pg_ctl/postgres (default: findServerBinaries()). */
  binDir?: string;
  /** Aborting it stops a server that is still starting. */
  signal?: AbortSignal;
  /** Receives progress lines (commands run, start-up time). */
  log?: (line: string) => void;
}

const SERVER_TOOLS = ["initdb", "pg_ctl", "postgres"] as const;

/** Settings for speed: the data is thrown away, so durability buys nothing. */
const FAST_SETTINGS: Record<string, string> = {
  fsync: "off",
  synchronous_commit: "off",
  full_page_writes: "off",
  wal_level: "minimal",
  max_wal_senders: "0",
  max_connections: "200",
  shared_buffers: "32MB",
  logging_collector: "off",
};

/**
 * Finds a directory holding initdb, pg_ctl and postgres: the explicit
 * `binDir`, else PG_BIN, else `initdb` on PATH (symlinks resolved), else the
 * newest /usr/lib/postgresql/N/bin. Throws ToolError naming the fix.
 */
export async function findServerBinaries(
  binDir?: string,
): Promise<ServerBinaries> {
  const explicit = binDir ?? nonEmpty(Deno.env.get("PG_BIN"));
  if (explicit !== undefined) {
    const missing = await missingTools(explicit);
    if (missing.length > 0) {
      throw new ToolError(
        `Cannot use PostgreSQL server binaries in "${explicit}": no ${
          missing.join(", ")
        } there: point --pg-bin or PG_BIN at the directory holding initdb, pg_ctl and postgres`,
        { tool: missing[0] },
      );
    }
    return { binDir: explicit, version: await serverVersion(explicit) };
  }
  for (const candidate of await candidateDirs()) {
    if ((await missingTools(candidate)).length === 0) {
      return { binDir: candidate, version: await serverVersion(candidate) };
    }
  }
  throw new ToolError(
    "Cannot find PostgreSQL server binaries (initdb, pg_ctl, postgres): install PostgreSQL (apt-get install postgresql) or set PG_BIN to the directory holding initdb",
    { tool: "initdb" },
  );
}

async function candidateDirs(): Promise<string[]> {
  const dirs: string[] = [];
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      // Debian links initdb from elsewhere; the real dir holds pg_ctl too.
      const real = await Deno.realPath(`${dir}/initdb`);
      dirs.push(real.slice(0, real.lastIndexOf("/")));
    } catch {
      // not in this PATH entry
    }
  }
  const versioned: { dir: string; major: number }[] = [];
  for (const root of ["/usr/lib/postgresql", "/usr/local/lib/postgresql"]) {
    try {
      for await (const entry of Deno.readDir(root)) {
        const major = Number.parseFloat(entry.name);
        if (Number.isFinite(major)) {
          versioned.push({ dir: `${root}/${entry.name}/bin`, major });
        }
      }
    } catch {
      // no such layout here
    }
  }
  versioned.sort((a, b) => b.major - a.major);
  return [...dirs, ...versioned.map((v) => v.dir)];
}

async function missingTools(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of SERVER_TOOLS) {
    try {
      const info = await Deno.stat(`${dir}/${tool}`);
      if (!info.isFile) missing.push(tool);
    } catch {
      missing.push(tool);
    }
  }
  return missing;
}

/** Major version from `postgres --version` ("postgres (PostgreSQL) 15.18 ..."). */
async function serverVersion(binDir: string): Promise<number> {
  const result = await exec([`${binDir}/postgres`, "--version"]);
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(result.stdout);
  if (result.code !== 0 || !match) {
    throw new ToolError(
      `Cannot run "${binDir}/postgres --version": ${
        lastLine(result.stderr || result.stdout) || `exit code ${result.code}`
      }`,
      { tool: "postgres", exitCode: result.code, stderrTail: result.stderr },
    );
  }
  const major = Number(match[1]);
  // Before 10 the major version had two parts (9.6); nothing here needs them.
  return major;
}

/**
 * Starts a throwaway server: initdb (trust auth, user postgres, UTF8) in a
 * temp dir, listening only on 127.0.0.1 at a free port, socket in the temp
 * dir. As root it runs the server as the `postgres` OS user. On any failure
 * everything started so far is stopped and removed before the error is thrown.
 */
export async function startEphemeralServer(
  options: EphemeralOptions = {},
): Promise<EphemeralServer> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const bins = await findServerBinaries(options.binDir);
  const runAs = await serverUser();
  const tmp = await Deno.makeTempDir({ prefix: "managed-migrate-pg-" });
  const data = `${tmp}/data`;
  const logFile = `${tmp}/server.log`;
  let running = false;
  let stopped = false;

  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    if (running) {
      const argv = runAs.wrap([`${bins.binDir}/pg_ctl`, ...stopArgs(data)]);
      const out = new Deno.Command(argv[0], {
        args: argv.slice(1),
        cwd: tmp,
        env: childEnv(),
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (!out.success) killPostmasterSync(data);
    }
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // already gone
    }
  };
  const stop = async () => {
    if (stopped) return;
    if (running) {
      const out = await exec(
        runAs.wrap([`${bins.binDir}/pg_ctl`, ...stopArgs(data)]),
        tmp,
      );
      if (out.code !== 0) killPostmasterSync(data);
      running = false;
    }
    stopSync();
  };

  try {
    if (runAs.uid !== undefined) {
      await Deno.chown(tmp, runAs.uid, runAs.gid ?? null);
    }
    options.signal?.throwIfAborted();
    const initdb = runAs.wrap([
      `${bins.binDir}/initdb`,
      "-D",
      data,
      "--auth=trust",
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
      ...(bins.version >= 14 ? ["--no-instructions"] : []),
    ]);
    log(`$ ${initdb.join(" ")}`);
    const init = await exec(initdb, tmp);
    if (init.code !== 0) {
      throw startError("initdb", init, runAs.user);
    }
    options.signal?.throwIfAborted();

    // A port taken between probe and bind makes pg_ctl fail: try a few.
    for (let attempt = 1;; attempt++) {
      const port = freePort();
      await writeSettings(data, tmp, port);
      const pgCtl = runAs.wrap([
        `${bins.binDir}/pg_ctl`,
        "-D",
        data,
        "-l",
        logFile,
        "-w",
        "-t",
        "60",
        "start",
      ]);
      log(`$ ${pgCtl.join(" ")}`);
      running = true;
      const start = await exec(pgCtl, tmp);
      if (start.code === 0) {
        await startWatchdog(
          tmp,
          runAs.wrap([`${bins.binDir}/pg_ctl`, ...stopArgs(data)]),
        );
        options.signal?.throwIfAborted();
        const ms = Math.round(performance.now() - started);
        log(
          `PostgreSQL ${bins.version} started on 127.0.0.1:${port} in ${ms}ms (data in ${data})`,
        );
        return {
          url: `postgres://postgres@127.0.0.1:${port}/postgres`,
          port,
          version: bins.version,
          binDir: bins.binDir,
          stop,
          stopSync,
          restart: async () => {
            const out = await exec(
              runAs.wrap([
                `${bins.binDir}/pg_ctl`,
                "-D",
                data,
                "-l",
                logFile,
                "-w",
                "-m",
                "fast",
                "restart",
              ]),
              tmp,
            );
            if (out.code !== 0) throw startError("pg_ctl", out, runAs.user);
          },
        };
      }
      killPostmasterSync(data);
      running = false;
      const serverLog = await Deno.readTextFile(logFile).catch(() => "");
      if (
        attempt >= 3 ||
        !/could not bind|address already in use/i.test(serverLog)
      ) {
        throw startError("pg_ctl", {
          ...start,
          stderr: `${start.stderr}\n${serverLog}`,
        }, runAs.user);
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
}

function stopArgs(data: string): string[] {
  // Immediate mode: the data is thrown away, so no checkpoint is needed.
  return ["-D", data, "-m", "immediate", "-w", "-t", "30", "stop"];
}

/**
 * Best effort: a detached shell that stops the server and removes `tmp` once
 * this process is gone (killed by a test timeout, SIGKILL) without calling
 * stop(). It exits by itself as soon as `tmp` disappears. Skipped where
 * setsid/sh are missing or not permitted (compiled binary).
 */
async function startWatchdog(
  tmp: string,
  stopCommand: string[],
): Promise<void> {
  try {
    const allowed = Deno.permissions.querySync({
      name: "run",
      command: "setsid",
    });
    if (allowed.state !== "granted") return;
    const script = `while kill -0 ${Deno.pid} 2>/dev/null && [ -d "$1" ]; ` +
      `do sleep 1; done; if [ -d "$1" ]; then ` +
      `${stopCommand.map(shQuote).join(" ")} >/dev/null 2>&1; ` +
      `rm -rf "$1"; fi`;
    await new Deno.Command("setsid", {
      args: ["-f", "sh", "-c", script, "managed-migrate-pg-watchdog", tmp],
      cwd: "/",
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
  } catch {
    // no setsid here: stop() and the unload handlers remain
  }
}

/** Last resort when pg_ctl stop fails: SIGKILL the postmaster from its pid file. */
function killPostmasterSync(data: string): void {
  try {
    const pid = Number(
      Deno.readTextFileSync(`${data}/postmaster.pid`).split("\n")[0],
    );
    if (Number.isInteger(pid) && pid > 1) Deno.kill(pid, "SIGKILL");
  } catch {
    // no pid file: nothing is running
  }
}

async function writeSettings(
  data: string,
  socketDir: string,
  port: number,
): Promise<void> {
  const settings: Record<string, string> = {
    ...FAST_SETTINGS,
    listen_addresses: "'127.0.0.1'",
    port: String(port),
    unix_socket_directories: `'${socketDir.replaceAll("'", "''")}'`,
  };
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
  // postgresql.auto.conf is read last, so a retry's port overrides the first.
  await Deno.writeTextFile(
    `${data}/postgresql.auto.conf`,
    `# written by managed-migrate for a throwaway server\n${
      lines.join("\n")
    }\n`,
  );
}

/** A port nobody listens on right now (bind port 0, read it, close). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

interface RunAs {
  user?: string;
  uid?: number;
  gid?: number;
  /** Prefixes a command so that it runs as `user` (unchanged when not root). */
  wrap(command: string[]): string[];
}

/**
 * PostgreSQL refuses to run as root, so as root everything runs as the
 * `postgres` OS user through runuser (or su).
 */
async function serverUser(): Promise<RunAs> {
  let uid: number | null = null;
  try {
    uid = Deno.uid();
  } catch {
    uid = null; // no permission to ask: assume an ordinary user
  }
  if (uid !== 0) return { wrap: (command) => command };
  const entry = await passwdEntry("postgres");
  if (!entry) {
    throw new ToolError(
      'Cannot start a throwaway PostgreSQL server as root: PostgreSQL refuses to run as root and there is no "postgres" OS user: create one (useradd --system postgres) or run as an ordinary user',
      { tool: "postgres" },
    );
  }
  const runuser = await firstExisting([
    "/usr/sbin/runuser",
    "/sbin/runuser",
    "/usr/bin/runuser",
  ]);
  if (runuser) {
    const prefix = [runuser, "-u", "postgres", "--"];
    return { user: "postgres", ...entry, wrap: (c) => [...prefix, ...c] };
  }
  const su = await firstExisting(["/bin/su", "/usr/bin/su"]) ?? "su";
  return {
    user: "postgres",
    ...entry,
    wrap: (
      c,
    ) => [su, "-s", "/bin/sh", "postgres", "-c", c.map(shQuote).join(" ")],
  };
}

async function passwdEntry(
  name: string,
): Promise<{ uid: number; gid: number } | undefined> {
  let text = "";
  try {
    text = await Deno.readTextFile("/etc/passwd");
  } catch {
    text = "";
  }
  let line = text.split("\n").find((l) => l.startsWith(`${name}:`));
  if (!line) {
    const out = await exec(["getent", "passwd", name]).catch(() => undefined);
    line = out?.code === 0 ? out.stdout.trim() : undefined;
  }
  if (!line) return undefined;
  const fields = line.split(":");
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

async function firstExisting(paths: string[]): Promise<string | undefined> {
  for (const path of paths) {
    try {
      await Deno.stat(path);
      return path;
    } catch {
      // try the next
    }
  }
  return undefined;
}

function shQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg)
    ? arg
    : `'${arg.replaceAll("'", `'\\''`)}'`;
}

interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Environment for server tools: no PG* variables that could redirect them. */
function childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (!key.startsWith("PG")) env[key] = value;
  }
  env.LC_ALL = "C";
  return env;
}

async function exec(argv: string[], cwd?: string): Promise<ExecResult> {
  try {
    const out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd,
      env: childEnv(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } catch (error) {
    return { code: 127, stdout: "", stderr: String(error) };
  }
}

function startError(
  tool: string,
  result: ExecResult,
  user: string | undefined,
): ToolError {
  const detail = lastLine(
    result.stderr.split("\n").filter((l) =>
      /error|fatal|denied|could not/i.test(l)
    )
      .join("\n") || result.stderr || result.stdout,
  );
  const hint = user && /denied/i.test(result.stderr)
    ? `: the "${user}" OS user must be able to read and execute the binaries`
    : "";
  return new ToolError(
    `Cannot start a throwaway PostgreSQL server: ${tool} exited with code ${result.code}: ${
      detail || "no output"
    }${hint}`,
    {
      tool,
      exitCode: result.code,
      stderrTail: result.stderr.split("\n").slice(-20).join("\n"),
    },
  );
}

function lastLine(text: string): string {
  return text.trim().split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ??
    "";
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
