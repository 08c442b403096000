/**
 * postgres.js client from a ConnectionInfo. A failed connect becomes one
 * ConnectionError line (host, port, cause), never a stack.
 */

import postgres from "postgres";
import type { ConnectionInfo } from "../config.ts";
import { ConnectionError } from "../errors.ts";
import { redactText } from "../redact.ts";

/** The client type used everywhere. */
export type Sql = postgres.Sql;

/** Options for connect(). */
export interface ConnectOptions {
  /** Called with each NOTICE the server sends (RAISE NOTICE in migrations). */
  onNotice?: (message: string) => void;
  /** Seconds to wait for the TCP connection (default 10). */
  connectTimeoutSeconds?: number;
  /** application_name shown in pg_stat_activity. */
  applicationName?: string;
}

function sslOption(sslmode: string | undefined): postgres.Options<
  Record<string, never>
>["ssl"] {
  switch (sslmode) {
    case undefined:
    case "disable":
      return false;
    case "allow":
    case "prefer":
      return "prefer";
    case "require":
      return "require";
    case "verify-ca":
    case "verify-full":
      return "verify-full";
    default:
      return false;
  }
}

/**
 * Opens a single-connection client and proves it works with `SELECT 1`.
 * Throws ConnectionError with host, port and cause when it cannot.
 * One connection only: the advisory lock and SET LOCAL need one session.
 */
export async function connect(
  info: ConnectionInfo,
  options: ConnectOptions = {},
): Promise<Sql> {
  const sql = postgres({
    host: info.host,
    port: info.port,
    user: info.user,
    password: info.password,
    database: info.database,
    ssl: sslOption(info.sslmode),
    max: 1,
    idle_timeout: 0,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    prepare: false,
    // No array-type lookup round trip at connect: we bind no arrays of custom types.
    fetch_types: false,
    onnotice: (notice) => options.onNotice?.(String(notice.message)),
    connection: {
      application_name: options.applicationName ?? "managed-migrate",
    },
    types: {},
  });
  try {
    await sql`select 1`;
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {});
    throw connectionError(info, error);
  }
  return sql;
}

/** Turns a connect failure into one line: which server, and why. */
export function connectionError(
  info: ConnectionInfo,
  error: unknown,
): ConnectionError {
  const e = error as { code?: string; message?: string; errno?: string };
  let cause = redactText(e.message ?? String(error));
  switch (e.code) {
    case "ECONNREFUSED":
      cause = "connection refused (is the server running and listening there?)";
      break;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      cause = `host "${info.host}" not found`;
      break;
    case "CONNECT_TIMEOUT":
      cause = "timed out while connecting";
      break;
    case "28P01":
      cause = `password authentication failed for user "${info.user}"`;
      break;
    case "28000":
      cause = `no access for user "${info.user}": ${cause}`;
      break;
    case "3D000":
      cause = `database "${info.database}" does not exist`;
      break;
  }
  return new ConnectionError(
    `Cannot connect to ${info.host}:${info.port} (database "${info.database}"): ${cause}`,
    { host: info.host, port: info.port, cause },
  );
}

/** Quotes an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
