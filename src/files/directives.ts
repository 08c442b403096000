/**
 * `-- managed-migrate:` directives. Honoured only as whole comment lines at
 * the top of a file (before the first SQL), never inside a string or prose.
 */

import { parseDuration } from "../config.ts";

/** What the directives at the top of one file ask for. */
export interface Directives {
  /** Run outside a transaction (CREATE INDEX CONCURRENTLY). */
  noTransaction: boolean;
  /** A down file that marks its migration irreversible. */
  irreversible: boolean;
  lockTimeoutMs?: number;
  statementTimeoutMs?: number;
  /** Rule ids this file deliberately allows. */
  allow: string[];
}

/** A directive line that could not be understood. */
export interface DirectiveProblem {
  line: number;
  message: string;
}

const PREFIX = /^--\s*managed-migrate:\s*(.*)$/i;

/**
 * Reads the directives from the leading comment block of `sql`. Returns the
 * directives and any malformed directive lines (the caller reports them with
 * the file name).
 */
export function parseDirectives(
  sql: string,
): { directives: Directives; problems: DirectiveProblem[] } {
  const directives: Directives = {
    noTransaction: false,
    irreversible: false,
    allow: [],
  };
  const problems: DirectiveProblem[] = [];
  const lines = sql.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    if (!line.startsWith("--")) break; // first SQL ends the directive block
    const match = PREFIX.exec(line);
    if (!match) continue;
    for (const item of match[1].split(/\s+(?=[a-z-]+(?:=|\s|$))/i)) {
      const problem = applyDirective(directives, item.trim());
      if (problem) problems.push({ line: i + 1, message: problem });
    }
  }
  return { directives, problems };
}

function applyDirective(d: Directives, item: string): string | undefined {
  if (item === "") return undefined;
  const [key, ...rest] = item.split("=");
  const value = rest.join("=").trim();
  try {
    switch (key.trim().toLowerCase()) {
      case "no-transaction":
        d.noTransaction = true;
        return undefined;
      case "irreversible":
        d.irreversible = true;
        return undefined;
      case "lock-timeout":
        d.lockTimeoutMs = parseDuration(value, "lock-timeout directive");
        return undefined;
      case "statement-timeout":
        d.statementTimeoutMs = parseDuration(
          value,
          "statement-timeout directive",
        );
        return undefined;
      case "allow":
        d.allow.push(
          ...value.split(",").map((s) => s.trim()).filter((s) => s !== ""),
        );
        return undefined;
      default:
        return `unknown directive "${item}": expected no-transaction, irreversible, lock-timeout=D, statement-timeout=D or allow=rule,...`;
    }
  } catch (error) {
    return (error as Error).message;
  }
}
