/**
 * Restores a backup made by backupDatabase(), all or nothing, giving back
 * every schema the backup covers exactly as it was at backup time.
 *
 * Why more than the dump itself: `--clean --if-exists` drops and recreates
 * only the objects the backup contains, so a table created after the backup
 * (say by the migration that went wrong) would survive the restore and the
 * next `migrate` would fail with "relation already exists". So a prelude runs
 * first, in the same transaction:
 * - The covered schemas come from pg_dump's own TOC comment headers
 *   (`-- Name: x; Type: T; Schema: s; Owner: o`, `-- Data for Name: ...`),
 *   found without connecting: a `.sql` file is streamed line by line (never
 *   read whole), a `.dump` through `pg_restore --schema-only --file=-` (no
 *   connection). A small SQL lexer skips COPY data, strings, dollar-quoted
 *   bodies and comments, so a row or a function body that looks like a
 *   header never names a schema. System schemas (`pg_*`,
 *   `information_schema`) are never touched.
 * - Every covered schema but `public` is dropped with `DROP SCHEMA IF EXISTS
 *   ... CASCADE`; the backup recreates it. `public` (pg_dump never creates
 *   it) is dropped and recreated empty, then given back the owner, ACL
 *   (grant by grant, same grantors) and comment it had just before; the
 *   backup's own statements about `public`, if any, apply on top as before.
 *   Its pg_namespace row is then the same but for the oid, and the server
 *   forgets its initial privileges (pg_init_privs), so later dumps spell
 *   out `GRANT USAGE ON SCHEMA public TO PUBLIC`: harmless.
 * - Extensions in a covered schema (pg_dump writes `CREATE EXTENSION IF NOT
 *   EXISTS ... WITH SCHEMA public`) go with the cascade and come back from
 *   the backup; one created after the backup is gone. The history tables
 *   live in a covered schema, so they come back as recorded in the backup;
 *   the migration advisory lock is session-level and survives.
 * - Objects outside the covered schemas stay: a schema created after the
 *   backup, roles, and schema-less objects the backup does not name. One of
 *   them that depends on a dropped object (a view in a new schema over a
 *   restored table) is dropped by the cascade.
 *
 * Flags, and why:
 * - `.sql`: `psql -X --quiet --no-password --set=ON_ERROR_STOP=1
 *   --single-transaction --command=PRELUDE --file=P`. psql (10+) wraps all
 *   its `-c`/`-f` in one BEGIN/COMMIT; `ON_ERROR_STOP` makes the first error
 *   roll everything back, prelude included; `-X` ignores ~/.psqlrc. A file
 *   without pg_dump's final "PostgreSQL database dump complete" line is
 *   refused before anything runs: psql would commit a truncated file.
 * - `.dump`: `pg_restore --clean --if-exists --file=- P | psql ...
 *   --single-transaction --command=PRELUDE --file=- --command=CHECK`.
 *   pg_restore writes the script (it never connects); psql runs it in one
 *   transaction. A marker statement is appended only after pg_restore
 *   exited 0, and CHECK fails without it: a pg_restore that dies halfway
 *   (truncated archive) rolls everything back instead of committing the
 *   part psql read. `--clean --if-exists` still drops schema-less objects
 *   (publications, event triggers...) the backup recreates.
 * - Ownership and privileges are kept in both formats (no `--no-owner`,
 *   no `--no-acl`): restoring our own backup must give back the database as
 *   it was, not one owned by whoever ran the restore. A role that may not
 *   run an `ALTER ... OWNER TO` makes the whole restore fail and roll back,
 *   naming the statement.
 */

import type { ConnectionInfo } from "../config.ts";
import { EXIT, ManagedMigrateError } from "../errors.ts";
import type { Reporter } from "../output/reporter.ts";
import { type BackupFormat, backupFormat } from "./dump.ts";
import { quoteIdent } from "../db/connect.ts";
import { findPgTool, pipePgTools, runPgTool } from "./exec.ts";

/** Options of restoreDatabase(). */
export interface RestoreOptions {
  info: ConnectionInfo;
  /** A `.sql` (plain) or `.dump` (custom format) backup. */
  path: string;
  /** Directory of the client binaries (--pg-bin / PG_BIN); default PATH. */
  pgBin?: string;
  reporter: Reporter;
  /** Aborting stops the tool; its transaction is rolled back by the server. */
  signal?: AbortSignal;
}

/** The magic bytes that start every pg_dump custom-format archive. */
const CUSTOM_MAGIC = "PGDMP";

/**
 * Checks a backup file before anything touches the database: it exists, is a
 * readable non-empty regular file whose extension matches its content.
 * Returns its format; throws a one-line error (exit 1, or 2 for a wrong
 * extension) saying why.
 */
export async function checkBackupFile(path: string): Promise<BackupFormat> {
  const format = backupFormat(path);
  const fail = (why: string) =>
    new ManagedMigrateError(
      `Cannot restore "${path}": ${why}`,
      EXIT.FAILURE,
      { path },
    );
  let head: Uint8Array;
  try {
    const stat = await Deno.stat(path);
    if (!stat.isFile) throw fail("it is not a regular file");
    if (stat.size === 0) throw fail("the file is empty");
    const file = await Deno.open(path, { read: true });
    try {
      head = new Uint8Array(5);
      const read = await file.read(head);
      head = head.subarray(0, read ?? 0);
    } finally {
      file.close();
    }
  } catch (error) {
    if (error instanceof ManagedMigrateError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw fail("the file does not exist");
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw fail("the file is not readable (permission denied)");
    }
    throw fail(error instanceof Error ? error.message : String(error));
  }
  const isCustom = new TextDecoder().decode(head) === CUSTOM_MAGIC;
  if (format === "custom" && !isCustom) {
    throw fail(
      "not a pg_dump custom-format archive (a .dump file must start with PGDMP): the file is corrupt or not a backup",
    );
  }
  if (format === "plain" && isCustom) {
    throw fail(
      "this is a pg_dump custom-format archive, not plain SQL: rename it to .dump",
    );
  }
  return format;
}

/** What scanBackup() found in a backup's SQL. */
export interface BackupScan {
  /** Schemas the backup covers, sorted; never a system schema. */
  schemas: string[];
  /** Whether pg_dump's final "PostgreSQL database dump complete" line was seen. */
  complete: boolean;
}

/** pg_dump's TOC comment header (pg_backup_archiver.c `_printTocEntry`). */
const TOC_HEADER =
  /^-- (?:Data for )?Name: (.*); Type: ([A-Z][A-Z ]*?); Schema: (.*?); Owner: /;
const DUMP_COMPLETE = "-- PostgreSQL database dump complete";
/** pg_dump writes each COPY statement on one line, its rows follow until `\.`. */
const COPY_FROM_STDIN = /^COPY .+ FROM stdin;$/;
const IDENT_CHAR = /[A-Za-z0-9_$\u0080-\uffff]/;
const DOLLAR_TAG = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/** System schemas a restore must never drop. */
function isSystemSchema(name: string): boolean {
  return name.startsWith("pg_") || name === "information_schema";
}

/**
 * Finds the schemas a pg_dump script covers from its TOC comment headers,
 * line by line. Headers count only outside COPY data, string literals,
 * quoted identifiers, dollar-quoted bodies and block comments (pg_dump's
 * output uses standard_conforming_strings), so table rows or function bodies
 * that look like headers are ignored.
 */
export async function scanBackup(
  lines: AsyncIterable<string>,
): Promise<BackupScan> {
  const schemas = new Set<string>();
  let complete = false;
  type State =
    | "code"
    | "copy"
    | "quote"
    | "equote"
    | "ident"
    | "dollar"
    | "block";
  let state: State = "code";
  let tag = "";
  let depth = 0;
  for await (const line of lines) {
    if (state === "copy") {
      if (line === "\\.") state = "code";
      continue;
    }
    if (state === "code") {
      if (line.startsWith("-- ")) {
        const header = TOC_HEADER.exec(line);
        if (header) {
          const [, name, type, schema] = header;
          const covered = type === "SCHEMA" ? name : schema;
          if (covered !== "-" && !isSystemSchema(covered)) {
            schemas.add(covered);
          }
        } else if (line === DUMP_COMPLETE) {
          complete = true;
        }
        continue;
      }
      if (COPY_FROM_STDIN.test(line)) {
        state = "copy";
        continue;
      }
    }
    // Walk the line only to track where quoted text starts and ends.
    let i = 0;
    while (i < line.length) {
      switch (state) {
        case "code": {
          const c = line[i];
          if (c === "-" && line[i + 1] === "-") {
            i = line.length;
          } else if (c === "/" && line[i + 1] === "*") {
            state = "block";
            depth = 1;
            i += 2;
          } else if (c === "'") {
            const prev = line[i - 1];
            state = (prev === "E" || prev === "e") &&
                !IDENT_CHAR.test(line[i - 2] ?? " ")
              ? "equote"
              : "quote";
            i++;
          } else if (c === '"') {
            state = "ident";
            i++;
          } else if (c === "$" && !IDENT_CHAR.test(line[i - 1] ?? " ")) {
            const match = DOLLAR_TAG.exec(line.slice(i, i + 64));
            if (match) {
              state = "dollar";
              tag = match[0];
              i += tag.length;
            } else i++;
          } else i++;
          break;
        }
        case "quote":
        case "ident": {
          const close = state === "quote" ? "'" : '"';
          const at = line.indexOf(close, i);
          if (at < 0) {
            i = line.length;
          } else if (line[at + 1] === close) {
            i = at + 2;
          } else {
            state = "code";
            i = at + 1;
          }
          break;
        }
        case "equote": {
          const c = line[i];
          if (c === "\\") i += 2;
          else if (c === "'" && line[i + 1] === "'") i += 2;
          else if (c === "'") {
            state = "code";
            i++;
          } else i++;
          break;
        }
        case "dollar": {
          const at = line.indexOf(tag, i);
          if (at < 0) i = line.length;
          else {
            state = "code";
            i = at + tag.length;
          }
          break;
        }
        case "block": {
          const open = line.indexOf("/*", i);
          const close = line.indexOf("*/", i);
          if (close < 0 && open < 0) i = line.length;
          else if (open >= 0 && (close < 0 || open < close)) {
            depth++;
            i = open + 2;
          } else {
            depth--;
            i = close + 2;
            if (depth === 0) state = "code";
          }
          break;
        }
        default:
          i = line.length;
      }
    }
  }
  return { schemas: [...schemas].sort(), complete };
}

/** The lines of a byte stream, decoded as UTF-8, without their line ends. */
export async function* linesOf(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const text = rest + chunk;
    let start = 0;
    let end: number;
    while ((end = text.indexOf("\n", start)) >= 0) {
      yield text.charCodeAt(end - 1) === 13
        ? text.slice(start, end - 1)
        : text.slice(start, end);
      start = end + 1;
    }
    rest = text.slice(start);
  }
  if (rest !== "") yield rest;
}

/**
 * SQL that empties every schema `schemas` names before the backup's SQL runs
 * in the same transaction: non-public schemas are dropped (the backup
 * recreates them); `public` is dropped and recreated with the owner, ACL and
 * comment it has now (created when missing, as pg_dump never creates it).
 */
export function restorePrelude(schemas: string[]): string {
  const out = ["SET LOCAL client_min_messages = warning;"];
  for (const schema of schemas) {
    if (schema !== "public") {
      out.push(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE;`);
    }
  }
  if (schemas.includes("public")) out.push(RESET_PUBLIC);
  return out.join("\n");
}

/**
 * Empties `public` while keeping what makes it the same schema to users:
 * owner, ACL (same grantee, privilege, grant option and grantor, in order)
 * and comment. A superuser's GRANT is recorded as granted by the owner
 * (https://www.postgresql.org/docs/current/sql-grant.html), so a grant by
 * another role runs under SET ROLE to that role.
 */
const RESET_PUBLIC = `DO $managed_migrate$
DECLARE
  s record;
  g record;
BEGIN
  SELECT nspowner::pg_catalog.regrole::text AS owner, nspacl AS acl,
         pg_catalog.obj_description(oid, 'pg_namespace') AS comment
    INTO s FROM pg_catalog.pg_namespace WHERE nspname = 'public';
  IF NOT FOUND THEN
    CREATE SCHEMA public;
    RETURN;
  END IF;
  DROP SCHEMA public CASCADE;
  CREATE SCHEMA public;
  EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %s', s.owner);
  IF s.acl IS NOT NULL THEN
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA public FROM %s', s.owner);
    FOR g IN
      SELECT a.grantor::pg_catalog.regrole::text AS grantor,
             CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                  ELSE a.grantee::pg_catalog.regrole::text END AS grantee,
             a.privilege_type, a.is_grantable
        FROM pg_catalog.aclexplode(s.acl) WITH ORDINALITY AS a
       ORDER BY a.ordinality
    LOOP
      IF g.grantor <> s.owner THEN
        EXECUTE pg_catalog.format('SET LOCAL ROLE %s', g.grantor);
      END IF;
      EXECUTE pg_catalog.format('GRANT %s ON SCHEMA public TO %s%s',
        g.privilege_type, g.grantee,
        CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
      IF g.grantor <> s.owner THEN
        RESET ROLE;
      END IF;
    END LOOP;
  END IF;
  IF s.comment IS NOT NULL THEN
    EXECUTE pg_catalog.format('COMMENT ON SCHEMA public IS %L', s.comment);
  END IF;
END
$managed_migrate$;`;

/** The placeholder setting the `.dump` trailer sets and the final check reads. */
const TRAILER_SETTING = "managed_migrate.restore_complete";
const TRAILER_MARKER = "managed-migrate: the restore script was cut short";
/** Appended to pg_restore's script only once pg_restore exited 0. */
const TRAILER_SQL =
  `\nSELECT pg_catalog.set_config('${TRAILER_SETTING}', 'yes', true);\n`;
/** Last command of a `.dump` restore: refuses to commit without the trailer. */
const TRAILER_CHECK = `DO $managed_migrate$
BEGIN
  IF pg_catalog.current_setting('${TRAILER_SETTING}', true) IS DISTINCT FROM 'yes' THEN
    RAISE EXCEPTION '${TRAILER_MARKER}';
  END IF;
END
$managed_migrate$;`;

/** The schemas a backup covers, read without connecting (see the header). */
export async function scanBackupFile(
  options: {
    path: string;
    format: BackupFormat;
    info: ConnectionInfo;
    pgRestore?: string;
    signal?: AbortSignal;
    /** Prefix of the error message. */
    what?: string;
  },
): Promise<BackupScan> {
  const { path, format, info, signal } = options;
  if (format === "plain") {
    const file = await Deno.open(path, { read: true });
    // The stream closes the file when it ends or fails.
    return await scanBackup(linesOf(file.readable));
  }
  const { stdout } = await runPgTool({
    tool: "pg_restore",
    path: options.pgRestore ?? await findPgTool("pg_restore"),
    args: ["--schema-only", "--file=-", path],
    // With --file and no --dbname pg_restore never connects.
    info,
    signal,
    stdout: "piped",
    what: options.what,
  });
  async function* one(): AsyncGenerator<string> {
    yield* stdout.split("\n");
  }
  return await scanBackup(one());
}

/**
 * Restores `path` into the database of `info` in one transaction: every
 * schema the backup covers is emptied, then the whole backup applied, or
 * nothing changes. Throws ToolError with the tool's own error line when it
 * fails.
 */
export async function restoreDatabase(
  options: RestoreOptions,
): Promise<{ path: string; durationMs: number; schemas: string[] }> {
  const { info, path, reporter, signal } = options;
  const format = await checkBackupFile(path);
  const psql = await findPgTool("psql", options.pgBin);
  const pgRestore = format === "custom"
    ? await findPgTool("pg_restore", options.pgBin)
    : undefined;
  signal?.throwIfAborted();
  const started = performance.now();
  const progress = await reporter.progress("Restoring", `${path}`);
  const ticker = reporter.interactive
    ? setInterval(() => {
      progress.message(
        `${path}, ${
          ((performance.now() - started) / 1000).toFixed(0)
        }s elapsed`,
      );
    }, 500)
    : undefined;
  const what =
    `Cannot restore "${path}" into database "${info.database}" (nothing was changed)`;
  try {
    const scan = await scanBackupFile({
      path,
      format,
      info,
      pgRestore,
      signal,
      what,
    });
    if (format === "plain" && !scan.complete) {
      throw new ManagedMigrateError(
        `Cannot restore "${path}": it lacks pg_dump's final "PostgreSQL database dump complete" line: the file is truncated or not a pg_dump backup (nothing was changed)`,
        EXIT.FAILURE,
        { path },
      );
    }
    signal?.throwIfAborted();
    const psqlArgs = [
      "-X",
      "--quiet",
      "--no-password",
      "--set=ON_ERROR_STOP=1",
      "--single-transaction",
      `--command=${restorePrelude(scan.schemas)}`,
    ];
    if (format === "plain") {
      await runPgTool({
        tool: "psql",
        path: psql,
        args: [...psqlArgs, `--file=${path}`],
        info,
        signal,
        what,
      });
    } else {
      await pipePgTools({
        producer: {
          tool: "pg_restore",
          path: pgRestore!,
          args: ["--clean", "--if-exists", "--file=-", path],
        },
        consumer: {
          tool: "psql",
          path: psql,
          args: [...psqlArgs, "--file=-", `--command=${TRAILER_CHECK}`],
        },
        info,
        trailer: TRAILER_SQL,
        signal,
        what,
      });
    }
    return {
      path,
      durationMs: Math.round(performance.now() - started),
      schemas: scan.schemas,
    };
  } finally {
    if (ticker !== undefined) clearInterval(ticker);
    progress.finish();
  }
}
