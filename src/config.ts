/**
 * Config from flags > POSTGRES_URL > DATABASE_URL > PG* variables, and the
 * duration syntax shared by every timeout flag.
 */

import { UsageError } from "./errors.ts";
import { redactUrl, registerSecret } from "./redact.ts";

/** Where and how to connect, resolved once from the URL or the libpq variables. */
export interface ConnectionInfo {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  sslmode?: string;
  /** The URL for display: password masked. */
  display: string;
}

/** Global options shared by every command. */
export interface Config {
  /** The db directory holding managed-migrations/ and managed-seeds/. */
  dir: string;
  /** Schema of the history tables. */
  historySchema: string;
  /** One JSON document on stdout; logs on stderr. */
  json: boolean;
  /** Only errors and the result. */
  quiet: boolean;
  /** Colour on stderr (terminal and no NO_COLOR). */
  color: boolean;
  /** The --database-url flag, if given (before env resolution). */
  databaseUrl?: string;
  /** Directory of the PostgreSQL client binaries (--pg-bin / PG_BIN). */
  pgBin?: string;
}

/** Reads an environment variable, treating an empty value as unset. */
export function env(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value === "" ? undefined : value;
}

/** Resolves the connection: --database-url, POSTGRES_URL, DATABASE_URL, then PG* variables. */
export function resolveConnection(flagUrl?: string): ConnectionInfo {
  const url = flagUrl ?? env("POSTGRES_URL") ?? env("DATABASE_URL");
  const info = url ? parseConnectionUrl(url) : fromLibpqEnv();
  registerSecret(info.password);
  return info;
}

function fromLibpqEnv(): ConnectionInfo {
  const host = env("PGHOST") ?? "localhost";
  const port = parsePort(env("PGPORT") ?? "5432", "PGPORT");
  const user = env("PGUSER") ?? env("USER") ?? "postgres";
  const database = env("PGDATABASE") ?? user;
  const info = {
    host,
    port,
    user,
    password: env("PGPASSWORD"),
    database,
    sslmode: env("PGSSLMODE"),
  };
  return { ...info, display: displayOf(info) };
}

/** Parses a `postgres://` URL; a malformed one is a usage error that never echoes the password. */
export function parseConnectionUrl(url: string): ConnectionInfo {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(
      `Invalid database URL "${
        redactUrl(url)
      }": expected postgres://user:password@host:5432/database`,
    );
  }
  if (!/^postgres(ql)?:$/.test(parsed.protocol)) {
    throw new UsageError(
      `Invalid database URL "${
        redactUrl(url)
      }": the scheme must be postgres:// or postgresql://`,
    );
  }
  const params = parsed.searchParams;
  const host = params.get("host") ?? decodeURIComponent(parsed.hostname) ??
    "";
  const info = {
    host: host.replace(/^\[(.*)\]$/, "$1") || env("PGHOST") || "localhost",
    port: parsed.port
      ? parsePort(parsed.port, "the database URL")
      : parsePort(params.get("port") ?? env("PGPORT") ?? "5432", "port"),
    user: decodeURIComponent(parsed.username) || env("PGUSER") || "postgres",
    password: parsed.password
      ? decodeURIComponent(parsed.password)
      : params.get("password") ?? env("PGPASSWORD"),
    database: decodeURIComponent(parsed.pathname.replace(/^\//, "")) ||
      env("PGDATABASE") || decodeURIComponent(parsed.username) || "postgres",
    sslmode: params.get("sslmode") ?? env("PGSSLMODE"),
  };
  return { ...info, display: displayOf(info) };
}

function displayOf(info: Omit<ConnectionInfo, "display">): string {
  const auth = info.password ? `${info.user}:***` : info.user;
  const host = info.host.includes(":") ? `[${info.host}]` : info.host;
  return `postgres://${auth}@${host}:${info.port}/${info.database}`;
}

function parsePort(text: string, where: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(
      `Invalid port "${text}" in ${where}: expected a number from 1 to 65535`,
    );
  }
  return port;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
};

/** Parses `500ms`, `5s`, `2min`, `1h` (a bare number is milliseconds) into milliseconds. */
export function parseDuration(text: string, what = "duration"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*$/i.exec(text);
  if (!match) {
    throw new UsageError(
      `Invalid ${what} "${text}": use a number with a unit, like 500ms, 5s, 2min or 1h`,
    );
  }
  const unit = (match[2] ?? "ms").toLowerCase();
  return Math.round(Number(match[1]) * DURATION_UNITS[unit]);
}

/** Formats milliseconds the way PostgreSQL accepts them in SET (`1500ms`). */
export function pgDuration(ms: number): string {
  return `${Math.max(0, Math.round(ms))}ms`;
}

/** Formats milliseconds for people: `850ms`, `1.2s`, `3min 5s`. */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes}min ${seconds}s`;
}

/** True when `ALLOW_BREAKING_MIGRATIONS` is set to a true value. */
export function allowBreakingFromEnv(): boolean {
  return /^(1|true|yes|on)$/i.test(env("ALLOW_BREAKING_MIGRATIONS") ?? "");
}
