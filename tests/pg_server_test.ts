import assert from "node:assert/strict";
import postgres from "postgres";
import {
  findServerBinaries,
  startEphemeralServer,
} from "../src/pg_server/ephemeral.ts";
import { ToolError } from "../src/errors.ts";

/** Running processes whose command line mentions `needle`: "pid program". */
async function processesMentioning(needle: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      if (cmdline.includes(needle)) {
        found.push(`${entry.name} ${cmdline.split("\0")[0]}`);
      }
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("startEphemeralServer() starts a server that answers a query, and stop() leaves no data dir and no process", async () => {
  const server = await startEphemeralServer();
  let dataDir = "";
  try {
    const sql = postgres(server.url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql`
        select current_setting('server_version_num')::int / 10000 as major,
               current_setting('data_directory') as data,
               host(inet_server_addr()) as addr,
               current_setting('listen_addresses') as listen, inet_server_port() as port`;
      assert.equal(row.major, server.version);
      assert.equal(row.addr, "127.0.0.1");
      assert.equal(row.port, server.port);
      assert.equal(row.listen, "127.0.0.1");
      dataDir = row.data;
    } finally {
      await sql.end({ timeout: 5 });
    }
    assert.ok(
      await exists(dataDir),
      `data dir ${dataDir} exists while running`,
    );
    assert.notEqual((await processesMentioning(dataDir)).length, 0);
  } finally {
    await server.stop();
  }
  assert.equal(await exists(dataDir), false, `data dir ${dataDir} removed`);
  // No server process right away; the watchdog shell exits within a second.
  const servers = (await processesMentioning(dataDir)).filter((p) =>
    p.endsWith("/postgres")
  );
  assert.deepEqual(servers, []);
  let left = await processesMentioning(dataDir);
  for (let i = 0; i < 30 && left.length > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = await processesMentioning(dataDir);
  }
  assert.deepEqual(left, []);
  await server.stop(); // a second stop is a no-op
});

Deno.test("findServerBinaries() honours an explicit directory", async () => {
  const found = await findServerBinaries();
  const again = await findServerBinaries(found.binDir);
  assert.equal(again.binDir, found.binDir);
  assert.equal(again.version, found.version);
  assert.ok(again.version >= 10, `major version ${again.version}`);
});

Deno.test("findServerBinaries() fails clearly for a directory without initdb", async () => {
  const empty = await Deno.makeTempDir({ prefix: "mm-no-initdb-" });
  try {
    await assert.rejects(() => findServerBinaries(empty), (error) => {
      assert.ok(error instanceof ToolError);
      assert.match(
        error.message,
        new RegExp(
          `^Cannot use PostgreSQL server binaries in "${empty}": no initdb, pg_ctl, postgres there: `,
        ),
      );
      assert.match(error.message, /PG_BIN/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});
