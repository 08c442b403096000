/**
 * Guardrail findings as text (squawk-like `file:line:column: severity[rule]
 * message` with a help line), JSON (`{ "findings": [...] }`) or GitHub
 * workflow annotations (sbdchd/squawk `crates/squawk/src/reporter.rs`).
 */

import type { Finding } from "../guardrails/mod.ts";

/** Colours the severity word; identity when colour is off. */
export type Painter = (
  text: string,
  code: "1" | "2" | "31" | "33" | "36",
) => string;

/** The `lint` JSON document: findings with camelCase keys in a fixed order. */
export function findingsDocument(findings: Finding[]): { findings: Finding[] } {
  return {
    findings: findings.map((f) => ({
      rule: f.rule,
      severity: f.severity,
      file: f.file,
      line: f.line,
      column: f.column,
      message: f.message,
      help: f.help,
      allowed: f.allowed,
    })),
  };
}

/** Text: each finding with its help line, then a summary over `fileCount` files. */
export function formatFindingsText(
  findings: Finding[],
  fileCount: number,
  paint: Painter = (t) => t,
): string {
  const lines: string[] = [];
  for (const f of findings) {
    const severity = paint(f.severity, f.severity === "error" ? "31" : "33");
    lines.push(
      `${f.file}:${f.line}:${f.column}: ${severity}[${f.rule}] ${f.message}${
        f.allowed ? " (allowed)" : ""
      }`,
    );
    lines.push(`  ${paint("help", "36")}: ${f.help}`);
  }
  lines.push(summaryLine(findings, fileCount));
  return lines.join("\n");
}

/** `Found 2 errors and 1 warning in 3 files (1 allowed)`, or `No findings in 3 files`. */
export function summaryLine(findings: Finding[], fileCount: number): string {
  const files = plural(fileCount, "file");
  if (findings.length === 0) return `No findings in ${files}`;
  const errors = findings.filter((f) => f.severity === "error").length;
  const warnings = findings.length - errors;
  const allowed = findings.filter((f) => f.allowed).length;
  const parts = [
    errors > 0 ? plural(errors, "error") : "",
    warnings > 0 ? plural(warnings, "warning") : "",
  ].filter((p) => p !== "");
  return `Found ${parts.join(" and ")} in ${files}${
    allowed > 0 ? ` (${allowed} allowed)` : ""
  }`;
}

/**
 * GitHub workflow commands: `::error file=F,line=L,col=C,title=RULE::MESSAGE`;
 * warnings as `::warning`, allowed errors as `::notice`. Data escapes `%`, CR
 * and LF; properties also `:` and `,` (actions/toolkit `command.ts`).
 */
export function formatFindingsGithub(findings: Finding[]): string {
  return findings.map((f) => {
    const level = f.allowed
      ? "notice"
      : f.severity === "error"
      ? "error"
      : "warning";
    const props = [
      `file=${escapeProperty(f.file)}`,
      `line=${f.line}`,
      `col=${f.column}`,
      `title=${escapeProperty(f.allowed ? `${f.rule} (allowed)` : f.rule)}`,
    ].join(",");
    return `::${level} ${props}::${
      escapeData(`${f.message}\nhelp: ${f.help}`)
    }`;
  }).join("\n");
}

/** Escapes a workflow command's message. */
export function escapeData(text: string): string {
  return text.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

/** Escapes a workflow command's property value. */
export function escapeProperty(text: string): string {
  return escapeData(text).replace(/:/g, "%3A").replace(/,/g, "%2C");
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
