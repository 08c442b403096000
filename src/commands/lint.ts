/**
 * `lint [PATH...]`: guardrail findings for up migrations, no database needed
 * (SPEC §5, §6). Default: every up migration in --dir. Exit 3 on an error
 * that is not allowed (warnings too under --strict).
 */

import type { CommandContext } from "./context.ts";
import { allowBreakingFromEnv } from "../config.ts";
import { EXIT, MigrationFilesError, UsageError } from "../errors.ts";
import {
  assertDbDir,
  compareVersions,
  discoverMigrations,
  joinPath,
  MIGRATIONS_DIR,
} from "../files/discover.ts";
import { parseDirectives } from "../files/directives.ts";
import type { LintInput, Rule } from "../guardrails/mod.ts";
import {
  findingsDocument,
  formatFindingsGithub,
  formatFindingsText,
} from "../output/findings.ts";

/** Runs `lint`; returns 0, or 3 when a finding blocks. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
  args: string[],
): Promise<number> {
  const guardrails = await import("../guardrails/mod.ts");
  if (typeof options.explain === "string") {
    return explain(ctx, guardrails.RULES, options.explain);
  }
  const format = (options.format as string | undefined) ?? "text";
  const strict = options.strict === true;
  const allowBreaking = options.allowBreaking === true ||
    allowBreakingFromEnv();

  const inputs = args.length > 0
    ? await inputsFromPaths(args)
    : await inputsFromDir(ctx.config.dir);
  for (const input of inputs) {
    for (const id of input.directives?.allow ?? []) {
      if (!guardrails.findRule(id)) {
        ctx.reporter.warn(
          `Unknown rule "${id}" in the allow= directive of "${input.file}": see managed-migrate lint --explain for the rule ids`,
        );
      }
    }
  }
  const findings = await guardrails.lintFiles(inputs, {
    allowBreaking,
    strict,
  });
  const doc = findingsDocument(findings);

  if (ctx.config.json) {
    ctx.reporter.result(doc, () => "");
  } else if (format === "json") {
    ctx.reporter.print(JSON.stringify(doc, null, 2));
  } else if (format === "github") {
    if (findings.length > 0) ctx.reporter.print(formatFindingsGithub(findings));
  } else {
    ctx.reporter.print(
      formatFindingsText(
        findings,
        inputs.length,
        (text, code) => ctx.reporter.paint(text, code),
      ),
    );
  }
  return guardrails.blockingFindings(findings, strict).length > 0
    ? EXIT.GUARDRAIL
    : EXIT.OK;
}

function explain(
  ctx: CommandContext,
  rules: readonly Rule[],
  id: string,
): number {
  const rule = rules.find((r) => r.id === id);
  if (!rule) {
    throw new UsageError(
      `Unknown rule "${id}": expected one of ${
        rules.map((r) => r.id).join(", ")
      }`,
    );
  }
  const { check: _check, ...data } = rule;
  ctx.reporter.result({ rule: data }, () => {
    const indent = (s: string) => s.split("\n").map((l) => `  ${l}`).join("\n");
    return [
      `${rule.id} (${rule.severity}, ${rule.family})`,
      "",
      rule.message,
      "",
      `Why: ${rule.rationale}`,
      "",
      `Instead: ${rule.help}`,
      "",
      "Bad:",
      indent(rule.bad),
      "",
      "Good:",
      indent(rule.good),
    ].join("\n");
  });
  return EXIT.OK;
}

/** Every up migration of the db directory, with its directives. */
async function inputsFromDir(dir: string): Promise<LintInput[]> {
  await assertDbDir(dir);
  const migrations = await discoverMigrations(dir);
  return migrations.map((m) => ({
    sql: m.upSql,
    file: m.upPath,
    directives: m.up,
  }));
}

const MIGRATION_NAME = /^(\d+)_.*\.up\.sql$/i;

/** Files as given, and for a directory its `.sql` files except down migrations, in version order. */
async function inputsFromPaths(paths: string[]): Promise<LintInput[]> {
  const files: string[] = [];
  for (const path of paths) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch {
      throw new UsageError(
        `Cannot find "${path}": pass a migration file or a directory`,
      );
    }
    if (!info.isDirectory) {
      files.push(path);
      continue;
    }
    let dir = path.replace(/\/+$/, "") || "/";
    try {
      if ((await Deno.stat(joinPath(dir, MIGRATIONS_DIR))).isDirectory) {
        dir = joinPath(dir, MIGRATIONS_DIR);
      }
    } catch {
      // not a db directory: lint the directory itself
    }
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      const name = entry.name;
      if (name.startsWith(".") || entry.isDirectory) continue;
      if (!/\.sql$/i.test(name) || /\.down\.sql$/i.test(name)) continue;
      names.push(name);
    }
    names.sort(byVersion);
    files.push(...names.map((n) => joinPath(dir, n)));
  }
  return await Promise.all(files.map(readInput));
}

function byVersion(a: string, b: string): number {
  const x = MIGRATION_NAME.exec(a);
  const y = MIGRATION_NAME.exec(b);
  if (x && y) {
    const c = compareVersions(x[1], y[1]);
    if (c !== 0) return c;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

async function readInput(file: string): Promise<LintInput> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (error) {
    throw new MigrationFilesError(
      `Cannot read "${file}": ${(error as Error).message}`,
      file,
    );
  }
  let sql: string;
  try {
    sql = decoder.decode(bytes).replace(/^\uFEFF/, "");
  } catch {
    throw new MigrationFilesError(
      `Invalid file "${file}": not valid UTF-8; save it as UTF-8`,
      file,
      "not valid UTF-8",
    );
  }
  const { directives, problems } = parseDirectives(sql);
  if (problems.length > 0) {
    throw new MigrationFilesError(
      `Invalid directive in "${file}" line ${problems[0].line}: ${
        problems[0].message
      }`,
      file,
      problems[0].message,
    );
  }
  return { sql, file, directives };
}
