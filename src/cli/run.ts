/**
 * parse → command → catch → print (redacted) → exit code. The only place
 * that turns errors into output (amacneil/dbmate `main.go`).
 */

import { CommanderError } from "@commander-js/extra-typings";
import { buildProgram } from "./program.ts";
import { env } from "../config.ts";
import type { CommandContext } from "../commands/context.ts";
import { EXIT, InterruptedError, ManagedMigrateError } from "../errors.ts";
import { colorEnabled, Reporter } from "../output/reporter.ts";
import { redactText } from "../redact.ts";

type CommandModule = {
  run(
    ctx: CommandContext,
    options: Record<string, unknown>,
    args: string[],
  ): Promise<number>;
};

/** Each command's module, imported only when that command runs. */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  migrate: () => import("../commands/migrate.ts"),
  rollback: () => import("../commands/rollback.ts"),
  seed: () => import("../commands/seed.ts"),
  status: () => import("../commands/status.ts"),
  backup: () => import("../commands/backup.ts"),
  restore: () => import("../commands/restore.ts"),
  test: () => import("../commands/test.ts"),
  lint: () => import("../commands/lint.ts"),
  new: () => import("../commands/new.ts"),
  baseline: () => import("../commands/baseline.ts"),
  repair: () => import("../commands/repair.ts"),
  wait: () => import("../commands/wait.ts"),
  completions: () => import("../commands/completions.ts"),
};

/** Runs the CLI with `argv` and returns the exit code. Never throws. */
export async function run(argv: string[]): Promise<number> {
  let reporter = new Reporter({
    json: argv.includes("--json"),
    quiet: false,
    color: colorEnabled(),
  });
  let exitCode: number = EXIT.OK;
  const interrupt = new AbortController();

  const program = buildProgram(async (name, options, args, globals) => {
    reporter = new Reporter({
      json: globals.json === true,
      quiet: globals.quiet === true,
      color: globals.color && colorEnabled(),
    });
    const ctx: CommandContext = {
      config: {
        dir: globals.dir.replace(/\/+$/, "") || "/",
        historySchema: globals.historySchema,
        json: globals.json === true,
        quiet: globals.quiet === true,
        color: reporter.options.color,
        databaseUrl: globals.databaseUrl,
        pgBin: globals.pgBin ?? env("PG_BIN"),
      },
      reporter,
      signal: interrupt.signal,
    };
    const module = await COMMANDS[name]();
    exitCode = await withInterrupts(
      interrupt,
      reporter,
      () => module.run(ctx, options, args),
    );
  });
  program.configureOutput({
    writeOut: (text) => Deno.stdout.writeSync(new TextEncoder().encode(text)),
    writeErr: (text) => Deno.stderr.writeSync(new TextEncoder().encode(text)),
  });

  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (error) {
    return report(error, reporter);
  }
}

/**
 * Runs a command with SIGINT/SIGTERM wired to the abort signal: the first
 * signal asks the command to stop cleanly (roll back, release the lock); a
 * second SIGINT exits at once.
 */
async function withInterrupts(
  controller: AbortController,
  reporter: Reporter,
  body: () => Promise<number>,
): Promise<number> {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const onSignal = () => {
    if (controller.signal.aborted) {
      reporter.error("Interrupted again: exiting now");
      Deno.exit(EXIT.INTERRUPTED);
    }
    reporter.warn(
      "Interrupt received: cancelling the running statement and rolling back (press Ctrl-C again to exit at once)",
    );
    controller.abort(new InterruptedError());
  };
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  try {
    return await body();
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

function report(error: unknown, reporter: Reporter): number {
  if (error instanceof CommanderError) {
    // --help and --version come through here with exit code 0.
    if (error.exitCode === 0) return EXIT.OK;
    if (reporter.options.json) {
      reporter.result({
        error: { code: EXIT.USAGE, message: error.message },
      }, () => "");
    }
    return EXIT.USAGE;
  }
  if (error instanceof ManagedMigrateError) {
    reporter.error(error.message);
    if (reporter.options.json) {
      reporter.result({
        error: {
          code: error.exitCode,
          message: error.message,
          ...error.details,
        },
      }, () => "");
    }
    return error.exitCode;
  }
  const pgError = serverError(error);
  if (pgError) return report(pgError, reporter);
  const text = error instanceof Error
    ? (error.stack ?? error.message)
    : String(error);
  reporter.error(
    `${
      redactText(text)
    }\nThis is a bug in managed-migrate: please report it with the command you ran`,
  );
  if (reporter.options.json) {
    reporter.result({
      error: { code: EXIT.FAILURE, message: redactText(String(error)) },
    }, () => "");
  }
  return EXIT.FAILURE;
}

/**
 * A PostgreSQL or connection error that escaped the commands' own handling
 * (say, the server restarting between two queries) is still one line, not a
 * bug report.
 */
function serverError(error: unknown): ManagedMigrateError | undefined {
  const e = error as { code?: unknown; message?: unknown };
  if (typeof e?.code !== "string" || typeof e.message !== "string") {
    return undefined;
  }
  if (!/^[0-9A-Z]{5}$|^CONNECTION_|^E[A-Z]+$/.test(e.code)) return undefined;
  return new ManagedMigrateError(
    `Database error: ${
      redactText(e.message)
    } (${e.code}); nothing more was changed, run the command again once the server is back`,
    EXIT.FAILURE,
    { sqlstate: e.code },
  );
}
