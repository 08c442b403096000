/**
 * Output: results on stdout (text, or one JSON document under --json), logs
 * and progress on stderr. Every line passes through redactText().
 */

import { redactText } from "../redact.ts";

const encoder = new TextEncoder();

/** How a command speaks. Created once per run by cli/run.ts. */
export interface ReporterOptions {
  json: boolean;
  quiet: boolean;
  color: boolean;
}

/** A running progress indicator; `finish()` removes it. */
export interface Progress {
  message(text: string): void;
  finish(): void;
}

/** Writes results, logs and progress; never prints a password. */
export class Reporter {
  constructor(readonly options: ReporterOptions) {}

  /** An informational line on stderr (hidden by --quiet). */
  info(text: string): void {
    if (this.options.quiet) return;
    this.#stderr(text);
  }

  /** A warning on stderr (shown even with --quiet). */
  warn(text: string): void {
    this.#stderr(`${this.#paint("warning", "33")}: ${text}`);
  }

  /** The error line on stderr, Deno style: `error: ...`. */
  error(text: string): void {
    this.#stderr(`${this.#paint("error", "31")}: ${text}`);
  }

  /** The command's result: `doc` as JSON under --json, else `text()` on stdout. */
  result(doc: unknown, text: () => string): void {
    if (this.options.json) {
      this.#stdout(JSON.stringify(doc, null, 2));
    } else {
      const body = text();
      if (body !== "") this.#stdout(body);
    }
  }

  /** Plain text on stdout (not under --json). */
  print(text: string): void {
    if (!this.options.json) this.#stdout(text);
  }

  /** Wraps text in an ANSI colour when colour is on. */
  paint(text: string, code: "1" | "2" | "31" | "32" | "33" | "36"): string {
    return this.#paint(text, code);
  }

  /** True when progress indicators may be drawn (a terminal, not --json/--quiet). */
  get interactive(): boolean {
    return !this.options.json && !this.options.quiet &&
      Deno.stderr.isTerminal();
  }

  /**
   * Starts a progress indicator on a terminal (dax's progress bar, loaded
   * lazily); elsewhere a no-op, so --json and CI logs stay clean.
   */
  async progress(prefix: string, message = ""): Promise<Progress> {
    if (!this.interactive) return { message() {}, finish() {} };
    const { default: $ } = await import("dax");
    const bar = $.progress({ prefix, message });
    return {
      message: (text) => bar.message(redactText(text)),
      finish: () => bar.finish(),
    };
  }

  #paint(text: string, code: string): string {
    return this.options.color ? `\x1b[${code}m${text}\x1b[0m` : text;
  }

  #stdout(text: string): void {
    writeAll(Deno.stdout, redactText(text) + "\n");
  }

  #stderr(text: string): void {
    writeAll(Deno.stderr, redactText(text) + "\n");
  }
}

function writeAll(
  stream: { writeSync(p: Uint8Array): number },
  text: string,
): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) {
    const written = stream.writeSync(bytes);
    bytes = bytes.subarray(written);
  }
}

/** True when colour should be used on stderr: a terminal and NO_COLOR unset. */
export function colorEnabled(): boolean {
  const noColor = Deno.env.get("NO_COLOR");
  return (noColor === undefined || noColor === "") && Deno.stderr.isTerminal();
}
