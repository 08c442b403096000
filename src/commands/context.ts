/** What every command receives from cli/run.ts. */

import type { Config } from "../config.ts";
import type { Reporter } from "../output/reporter.ts";

/** Config, reporter and the interrupt signal of one CLI run. */
export interface CommandContext {
  config: Config;
  reporter: Reporter;
  /** Aborted on SIGINT/SIGTERM; long work checks it between steps. */
  signal: AbortSignal;
}

/** A command's entry point: returns the exit code, or throws a ManagedMigrateError. */
export type CommandResult = Promise<number>;
