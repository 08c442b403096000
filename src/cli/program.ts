/**
 * The commander program: global options and one .command() per command.
 * Actions import their command module lazily, so `status` never loads the
 * parser's WASM and `--version` loads nothing at all.
 */

import { Argument, Command, Option } from "@commander-js/extra-typings";
import denoJson from "../../deno.json" with { type: "json" };

/** The version printed by --version, from deno.json. */
export const VERSION: string = denoJson.version;

/** Options every command accepts. */
export interface GlobalOptions {
  dir: string;
  databaseUrl?: string;
  historySchema: string;
  json?: true;
  quiet?: true;
  color: boolean;
  pgBin?: string;
}

/** Called by an action with the command's name, its options and its positional arguments. */
export type Dispatch = (
  name: string,
  options: Record<string, unknown>,
  args: string[],
  globals: GlobalOptions,
) => Promise<void>;

function timeoutOptions<T extends Command<[], Record<string, unknown>>>(
  cmd: T,
) {
  return cmd
    .option(
      "--lock-timeout <duration>",
      "lock_timeout per migration (env MIGRATION_LOCK_TIMEOUT; default 1s)",
    )
    .option(
      "--statement-timeout <duration>",
      "statement_timeout per migration (env MIGRATION_STATEMENT_TIMEOUT; default 10min)",
    )
    .option(
      "--lock-retries <n>",
      "retries after a lock timeout, with backoff (default 5)",
    )
    .option(
      "--wait-timeout <duration>",
      "how long to wait for another runner's advisory lock (default: no limit)",
    );
}

/** Builds the program; `dispatch` runs the chosen command. */
export function buildProgram(dispatch: Dispatch) {
  const program = new Command()
    .name("managed-migrate")
    .description(
      "PostgreSQL migrations and seeds with online-safety guardrails, timeouts and backups",
    )
    .version(VERSION, "-V, --version", "print the version")
    .option(
      "-d, --dir <path>",
      "db directory with managed-migrations/ and managed-seeds/",
      "./db",
    )
    .option(
      "--database-url <url>",
      "connection URL (default: POSTGRES_URL, DATABASE_URL, then PG* variables)",
    )
    .option(
      "--history-schema <schema>",
      "schema of the history tables",
      "public",
    )
    .option("--json", "print one JSON document on stdout; logs go to stderr")
    .option("-q, --quiet", "print only errors and the result")
    .option("--no-color", "no colour (NO_COLOR is honoured too)")
    .option(
      "--pg-bin <dir>",
      "directory of pg_dump/psql/pg_restore (env PG_BIN; default: PATH)",
    )
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();

  const globals = () => program.opts() as GlobalOptions;
  const run =
    (name: string, args: string[] = []) => (options: Record<string, unknown>) =>
      dispatch(name, options, args, globals());

  const migrate = program.command("migrate").alias("up")
    .description("apply pending migrations (backup first, guardrails checked)")
    .option("--to <version>", "apply up to and including this version")
    .option("--dry-run", "print the plan, findings and SQL; change nothing")
    .option("--backup-path <path>", "where to write the pre-migration backup")
    .option("--no-backup", "skip the pre-migration backup")
    .option(
      "--allow-breaking",
      "let breaking guardrail findings through (env ALLOW_BREAKING_MIGRATIONS=true)",
    )
    .option("--strict", "treat guardrail warnings as errors")
    .option(
      "--single-transaction",
      "apply all pending migrations in one transaction",
    )
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate migrate\n  managed-migrate migrate --to 202412010001 --dry-run\n  managed-migrate migrate --backup-path /tmp/db-backup.sql",
    );
  timeoutOptions(migrate).action((opts) => run("migrate")(opts));

  const rollback = program.command("rollback").alias("down")
    .description("roll back applied migrations, newest first (backup first)")
    .option("--steps <n>", "how many migrations to roll back (default 1)")
    .option("--to <version>", "roll back every migration newer than this one")
    .option("--dry-run", "print the plan and SQL; change nothing")
    .option("--backup-path <path>", "where to write the pre-rollback backup")
    .option("--no-backup", "skip the pre-rollback backup")
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate rollback\n  managed-migrate rollback --steps 2",
    );
  timeoutOptions(rollback).action((opts) => run("rollback")(opts));

  program.command("seed")
    .description("apply seeds not yet in seed_history")
    .option("--dry-run", "print the seeds that would run; change nothing")
    .option("--rerun-changed", "run again seeds whose file changed")
    .addHelpText("after", "\nExample:\n  managed-migrate seed")
    .action((opts) => run("seed")(opts));

  program.command("status")
    .description("show every migration and seed with its state")
    .option("--check", "exit 5 when anything is pending or drifted")
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate status --json\n  managed-migrate status --check",
    )
    .action((opts) => run("status")(opts));

  program.command("backup")
    .description("pg_dump the database (.sql plain, .dump custom format)")
    .option(
      "--backup-path <path>",
      "output file (default ./backups/<db>-<UTC timestamp>.sql)",
    )
    .addHelpText(
      "after",
      "\nExample:\n  managed-migrate backup --backup-path /tmp/db.dump",
    )
    .action((opts) => run("backup")(opts));

  program.command("restore")
    .description("restore a backup in one transaction (all or nothing)")
    .argument("[path]", "backup file (.sql or .dump)")
    .option("--restore <path>", "backup file (.sql or .dump)")
    .option("-y, --yes", "do not ask for confirmation")
    .addHelpText(
      "after",
      "\nExample:\n  managed-migrate restore --restore /tmp/db.sql --yes",
    )
    .action((path, opts) => run("restore", path ? [path] : [])(opts));

  program.command("test")
    .description(
      "apply, reverse and re-apply every migration inside a rolled-back transaction",
    )
    .option(
      "--ephemeral",
      "run on a throwaway server from local PostgreSQL binaries",
    )
    .option("--from <version>", "test only migrations after this version")
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate test\n  managed-migrate test --ephemeral",
    )
    .action((opts) => run("test")(opts));

  program.command("lint")
    .description(
      "check up migrations against the guardrails (no database needed)",
    )
    .argument(
      "[paths...]",
      "files to lint (default: every up migration in --dir)",
    )
    .addOption(
      new Option("--format <format>", "output format")
        .choices(["text", "json", "github"] as const)
        .default("text" as const),
    )
    .option("--strict", "warnings fail too (exit 3)")
    .option("--allow-breaking", "report breaking findings as allowed")
    .option("--explain <rule>", "print a rule's rationale and safe alternative")
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate lint\n  managed-migrate lint --format github db/managed-migrations/*.up.sql",
    )
    .action((paths, opts) => run("lint", paths)(opts));

  program.command("new")
    .description(
      "create a migration pair with the current UTC YYYYMMDDHHMM version",
    )
    .argument("<name>", "migration name: letters, digits, _ or -")
    .addHelpText("after", "\nExample:\n  managed-migrate new add_users_email")
    .action((name, opts) => run("new", [name])(opts));

  program.command("baseline")
    .description(
      "record migrations up to VERSION as applied without running them",
    )
    .requiredOption("--to <version>", "last version the database already has")
    .addHelpText(
      "after",
      "\nExample:\n  managed-migrate baseline --to 202412010001",
    )
    .action((opts) => run("baseline")(opts));

  program.command("repair")
    .description("resolve a migration left `running` after a crash")
    .argument("<version>", "the version left running")
    .option("--applied", "the migration did complete: mark it applied")
    .option("--rolled-back", "the migration did not complete: forget it")
    .addHelpText(
      "after",
      "\nExample:\n  managed-migrate repair 202412010003 --applied",
    )
    .action((version, opts) => run("repair", [version])(opts));

  program.command("wait")
    .description("wait until the server accepts connections")
    .option("--timeout <duration>", "give up after this long", "60s")
    .addHelpText("after", "\nExample:\n  managed-migrate wait --timeout 30s")
    .action((opts) => run("wait")(opts));

  program.command("completions")
    .description("print a shell completion script (bash, zsh or fish)")
    .addArgument(
      new Argument("<shell>", "shell to complete for").choices(
        ["bash", "zsh", "fish"] as const,
      ),
    )
    .addHelpText(
      "after",
      "\nExamples:\n  managed-migrate completions bash > /etc/bash_completion.d/managed-migrate\n  source <(managed-migrate completions zsh)\n  managed-migrate completions fish > ~/.config/fish/completions/managed-migrate.fish",
    )
    .action((shell, opts) => run("completions", [shell])(opts));

  // Called by the completion scripts on each TAB: `complete -- WORDS...`.
  program.command("complete", { hidden: true })
    .description("answer a completion request from a completion script")
    .argument("[words...]", "the words typed so far")
    .action((words) => run("completions", words)({ request: true }));

  return program;
}
