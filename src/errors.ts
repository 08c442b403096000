/**
 * Error classes, one per outcome, each carrying its exit code (SPEC §7) and
 * the data that explains it. The core throws these; only `cli/run.ts` prints.
 */

/** Exit codes of SPEC §7. */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  GUARDRAIL: 3,
  INVALID: 4,
  CHECK_FAILED: 5,
  INTERRUPTED: 130,
} as const;

/** Base class of every known error: a one-line message and an exit code. */
export class ManagedMigrateError extends Error {
  /** Exit code the CLI returns for this error. */
  readonly exitCode: number;
  /** Extra fields for the `--json` error document. */
  readonly details: Record<string, unknown>;

  constructor(
    message: string,
    exitCode: number,
    details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.details = details;
  }
}

/** Wrong flags or arguments (exit 2). */
export class UsageError extends ManagedMigrateError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message, EXIT.USAGE, details);
  }
}

/** Guardrail findings that are not allowed (exit 3). */
export class GuardrailError extends ManagedMigrateError {
  constructor(message: string, readonly findings: unknown[]) {
    super(message, EXIT.GUARDRAIL, { findings });
  }
}

/** A bad file in the db directory (exit 4). */
export class MigrationFilesError extends ManagedMigrateError {
  constructor(message: string, readonly file: string, reason = message) {
    super(message, EXIT.INVALID, { file, reason });
  }
}

/** History that no longer matches the files (exit 4). */
export class DriftError extends ManagedMigrateError {
  constructor(message: string, readonly drift: unknown[] = []) {
    super(message, EXIT.INVALID, { drift });
  }
}

/** A statement failed on the server (exit 1). */
export class DatabaseError extends ManagedMigrateError {
  constructor(
    message: string,
    details: {
      sqlstate?: string;
      file?: string;
      line?: number;
      column?: number;
      [key: string]: unknown;
    } = {},
  ) {
    super(message, EXIT.FAILURE, details);
  }
}

/** A blocking session that one of our locks waited on (from pg_stat_activity). */
export interface BlockingSession {
  pid: number;
  applicationName: string;
  clientAddr: string | null;
  state: string | null;
  transactionAgeMs: number | null;
  query: string;
}

/** lock_timeout exceeded after every retry (exit 1). */
export class LockTimeoutError extends ManagedMigrateError {
  constructor(message: string, readonly blockers: BlockingSession[]) {
    super(message, EXIT.FAILURE, { blockers });
  }
}

/** The server could not be reached or refused us (exit 1). */
export class ConnectionError extends ManagedMigrateError {
  constructor(
    message: string,
    details: { host?: string; port?: number; cause?: string } = {},
  ) {
    super(message, EXIT.FAILURE, details);
  }
}

/** pg_dump/psql/pg_restore failed or is missing (exit 1). */
export class ToolError extends ManagedMigrateError {
  constructor(
    message: string,
    details: { tool: string; exitCode?: number; stderrTail?: string },
  ) {
    super(message, EXIT.FAILURE, details);
  }
}

/** SIGINT/SIGTERM stopped the run (exit 130). */
export class InterruptedError extends ManagedMigrateError {
  constructor(message = "Interrupted", details: Record<string, unknown> = {}) {
    super(message, EXIT.INTERRUPTED, details);
  }
}
