/**
 * `completions SHELL`: prints a bash, zsh or fish completion script, made by
 * `@bomb.sh/tab` from the commander program itself (no hand-kept lists).
 *
 * tab's scripts are thin: on each TAB they call back into the binary as
 * `managed-migrate complete -- WORDS...` (a hidden command, handled here with
 * `request: true`), which answers from the same program definition, so the
 * completions always match the installed version.
 */

import type { CommandContext } from "./context.ts";
import { UsageError } from "../errors.ts";

/** The shells `completions` supports. */
export const SHELLS = ["bash", "zsh", "fish"] as const;

/** Directive tab's scripts read: 0 lets the shell fall back to file names. */
const DIRECTIVE_DEFAULT = 0;

/** Prints the script for `args[0]`, or (options.request) answers a completion request. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  args: string[],
): Promise<number> {
  const completer = await loadCompleter();
  if (options.request === true) {
    const text = capture(() => completer.parse([...args]));
    ctx.reporter.result({ completions: text.split("\n") }, () => text);
    return 0;
  }
  const shell = args[0];
  if (!(SHELLS as readonly string[]).includes(shell)) {
    throw new UsageError(
      `Cannot print completions for "${shell}": use one of ${
        SHELLS.join(", ")
      }`,
    );
  }
  const script = capture(() =>
    completer.setup("managed-migrate", "managed-migrate", shell)
  );
  ctx.reporter.result({ shell, script }, () => script);
  return 0;
}

/** The part of tab's RootCommand used here. */
interface Completer {
  completions: unknown[];
  parse(words: string[]): void;
  setup(name: string, executable: string, shell: string): void;
  complete(toComplete: string): void;
}

/**
 * Builds tab's model of the program. Imported lazily: only `completions` and
 * `complete` pay for it.
 */
async function loadCompleter(): Promise<Completer> {
  const [{ default: tab }, { buildProgram }] = await Promise.all([
    import("@bomb.sh/tab/commander"),
    import("../cli/program.ts"),
  ]);
  const program = buildProgram(() => Promise.resolve());
  // The adapter registers its own `completions` and hidden `complete`
  // commands; drop ours so commander does not see each name twice.
  const commands = program.commands as unknown as Array<{ name(): string }>;
  for (let i = commands.length - 1; i >= 0; i--) {
    if (["completions", "complete"].includes(commands[i].name())) {
      commands.splice(i, 1);
    }
  }
  const completer = tab(program as never, {
    completionCommandName: "completions",
  }) as unknown as Completer;
  // tab always answers "no file completion"; where it has nothing to offer
  // (a path argument such as `restore P` or `lint PATH...`), let the shell
  // complete file names instead.
  const complete = completer.complete.bind(completer);
  completer.complete = (toComplete: string) => {
    if (completer.completions.length > 0) return complete(toComplete);
    capturedLines?.push(`:${DIRECTIVE_DEFAULT}`);
  };
  return completer;
}

let capturedLines: string[] | undefined;

/** Runs `fn`, collecting what tab writes with console.log, and returns it. */
function capture(fn: () => void): string {
  const lines: string[] = [];
  // deno-lint-ignore no-console
  const original = console.log;
  capturedLines = lines;
  // deno-lint-ignore no-console
  console.log = (...parts: unknown[]) => {
    lines.push(parts.map(String).join(" "));
  };
  try {
    fn();
  } finally {
    // deno-lint-ignore no-console
    console.log = original;
    capturedLines = undefined;
  }
  return lines.join("\n");
}
