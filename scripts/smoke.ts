/**
 * `deno task smoke [--binary PATH | --deno]`: the end-to-end scenario users
 * run, on a throwaway server: --version, migrate (with backup), status,
 * seed, rollback, lint, backup, restore. Prints PASS/FAIL per step and exits
 * 1 when any step failed.
 *
 * It runs `dist/managed-migrate` when `deno task compile` built one, else
 * `deno run` of main.ts with exactly the compiled binary's permissions
 * (PERMISSION_FLAGS), so a permission the binary lacks fails here too.
 */

import denoJson from "../deno.json" with { type: "json" };
import { HOST_OUTPUT, PERMISSION_FLAGS } from "./compile.ts";
import { startEphemeralServer } from "../src/pg_server/ephemeral.ts";

const ROOT = new URL("../", import.meta.url);
const rootPath = (rel: string) => new URL(rel, ROOT).pathname;

/** How the CLI under test is started: the program and the arguments before the CLI's own. */
export interface Runner {
  label: string;
  program: string;
  prefix: string[];
}

/** One CLI run's outcome. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

/** One step's verdict. */
export interface StepResult {
  name: string;
  ok: boolean;
  detail: string;
  ms: number;
}

/** The compiled binary when it exists (or `binary` is given), else `deno run` of main.ts. */
export async function chooseRunner(
  options: { binary?: string; deno?: boolean } = {},
): Promise<Runner> {
  const binary = options.binary ?? rootPath(HOST_OUTPUT);
  if (!options.deno) {
    try {
      if ((await Deno.stat(binary)).isFile) {
        return { label: binary, program: binary, prefix: [] };
      }
    } catch {
      if (options.binary) throw new Error(`No binary at "${binary}"`);
    }
  }
  return {
    label: "deno run main.ts with the compiled binary's permissions",
    program: Deno.execPath(),
    prefix: [
      "run",
      "--quiet",
      "--no-prompt",
      "--config",
      rootPath("deno.json"),
      ...PERMISSION_FLAGS,
      rootPath("main.ts"),
    ],
  };
}

/** The scenario's db directory: two migrations (one no-transaction) and a seed. */
const SCENARIO: Record<string, string> = {
  "managed-migrations/202401010001_create_widgets.up.sql":
    "CREATE TABLE widgets (\n  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n  name text NOT NULL\n);\n",
  "managed-migrations/202401010001_create_widgets.down.sql":
    "DROP TABLE widgets;\n",
  "managed-migrations/202401010002_widgets_name_index.up.sql":
    "-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name);\n",
  "managed-migrations/202401010002_widgets_name_index.down.sql":
    "-- managed-migrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS widgets_name_idx;\n",
  "managed-seeds/001_widgets.sql":
    "INSERT INTO widgets (name) VALUES ('sprocket');\n",
};

/** A db directory whose only migration drops a table: lint must refuse it. */
const BREAKING: Record<string, string> = {
  "managed-migrations/202401010001_drop_widgets.up.sql":
    "-- a comment mentioning DROP TABLE must not count\nDROP TABLE widgets;\n",
  "managed-migrations/202401010001_drop_widgets.down.sql":
    "-- managed-migrate: irreversible\n",
};

async function writeTree(dir: string, files: Record<string, string>) {
  for (const [rel, text] of Object.entries(files)) {
    const path = `${dir}/${rel}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), {
      recursive: true,
    });
    await Deno.writeTextFile(path, text);
  }
}

/** Runs the scenario; `log` receives one PASS/FAIL line per step. */
export async function runSmoke(
  runner: Runner,
  log: (line: string) => void,
): Promise<StepResult[]> {
  const work = await Deno.makeTempDir({ prefix: "managed-migrate-smoke-" });
  const results: StepResult[] = [];
  const server = await startEphemeralServer();
  try {
    const dir = `${work}/db`;
    const bad = `${work}/bad`;
    await writeTree(dir, SCENARIO);
    await writeTree(bad, BREAKING);
    const url = server.url;

    const cli = async (args: string[]): Promise<CliRun> => {
      const out = await new Deno.Command(runner.program, {
        args: [...runner.prefix, ...args],
        cwd: work,
        clearEnv: true,
        env: {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          HOME: Deno.env.get("HOME") ?? work,
          NO_COLOR: "1",
          ...(Deno.env.get("DENO_DIR")
            ? { DENO_DIR: Deno.env.get("DENO_DIR")! }
            : {}),
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      return {
        code: out.code,
        stdout,
        stderr: new TextDecoder().decode(out.stderr),
        json,
      };
    };
    const db = ["--dir", dir, "--database-url", url];

    const step = async (
      name: string,
      args: string[],
      check: (r: CliRun) => string | undefined,
    ) => {
      const started = performance.now();
      let detail: string | undefined;
      let res: CliRun | undefined;
      try {
        res = await cli(args);
        detail = check(res);
      } catch (error) {
        detail = `check threw: ${(error as Error).message}`;
      }
      const ms = Math.round(performance.now() - started);
      const ok = detail === undefined;
      if (!ok && res) {
        const tail = res.stderr.trim().split("\n").slice(-3).join(" | ");
        detail += ` (exit ${res.code}${tail ? `; stderr: ${tail}` : ""})`;
      }
      results.push({ name, ok, detail: detail ?? "", ms });
      log(
        `${ok ? "PASS" : "FAIL"} ${name} (${ms} ms)${ok ? "" : `: ${detail}`}`,
      );
    };
    const exit = (r: CliRun, code: number) =>
      r.code === code ? undefined : `expected exit ${code}, got ${r.code}`;
    const states = (r: CliRun) =>
      (r.json?.migrations ?? []).map((m: { version: string; state: string }) =>
        `${m.version}:${m.state}`
      ).join(",");

    await step(
      "--version prints deno.json's version",
      ["--version"],
      (r) =>
        exit(r, 0) ??
          (r.stdout.trim() === denoJson.version
            ? undefined
            : `printed "${r.stdout.trim()}", not "${denoJson.version}"`),
    );

    const preBackup = `${work}/pre-migrate.sql`;
    await step(
      "migrate applies both migrations after a backup",
      [...db, "--json", "migrate", "--backup-path", preBackup],
      (r) => {
        const applied = (r.json?.applied ?? []).map((a: { version: string }) =>
          a.version
        );
        return exit(r, 0) ??
          (applied.join(",") === "202401010001,202401010002"
            ? undefined
            : `applied ${JSON.stringify(applied)}`) ??
          (r.json?.backup?.path ? undefined : "no backup in the JSON") ??
          (fileSize(preBackup) > 0 ? undefined : `no backup at ${preBackup}`);
      },
    );

    await step("migrate again is up to date", [
      ...db,
      "--json",
      "migrate",
    ], (r) =>
      exit(r, 0) ??
        ((r.json?.applied ?? []).length === 0 && r.json?.backup === null
          ? undefined
          : "applied something or took a backup"));

    await step("status --json shows both applied", [
      ...db,
      "--json",
      "status",
    ], (r) =>
      exit(r, 0) ??
        (states(r) === "202401010001:applied,202401010002:applied"
          ? undefined
          : `states ${states(r)}`));

    await step(
      "seed applies the seed",
      [...db, "--json", "seed"],
      (r) =>
        exit(r, 0) ??
          // The seed's name, with or without its extension.
          ((r.json?.seeded ?? []).map((s: { name: string }) =>
              s.name.replace(/\.sql$/, "")
            ).join() === "001_widgets"
            ? undefined
            : `seeded ${JSON.stringify(r.json?.seeded)}`),
    );

    await step(
      "status --check exits 0 with nothing pending",
      [...db, "status", "--check"],
      (r) => exit(r, 0),
    );

    await step(
      "rollback reverts the newest (no-transaction) migration",
      [...db, "--json", "rollback", "--no-backup"],
      (r) =>
        exit(r, 0) ??
          ((r.json?.rolledBack ?? []).map((s: { version: string }) => s.version)
              .join() === "202401010002"
            ? undefined
            : `rolled back ${JSON.stringify(r.json?.rolledBack)}`),
    );

    await step(
      "status --check exits 5 with a pending migration",
      [...db, "status", "--check"],
      (r) => exit(r, 5),
    );

    await step(
      "lint accepts the example db directory",
      ["--dir", rootPath("db"), "lint"],
      (r) => exit(r, 0),
    );

    await step(
      "lint refuses DROP TABLE with exit 3 (parser WASM loads)",
      ["--dir", bad, "lint", "--format", "json"],
      (r) =>
        exit(r, 3) ??
          ((r.json?.findings ?? []).some((f: { rule: string; line: number }) =>
              f.rule === "drop-table" && f.line === 2
            )
            ? undefined
            : `findings ${JSON.stringify(r.json?.findings)}`),
    );

    const backup = `${work}/smoke.sql`;
    await step("backup writes a 0600 file", [
      ...db,
      "--json",
      "backup",
      "--backup-path",
      backup,
    ], (r) => {
      if (r.code !== 0) return exit(r, 0);
      if (fileSize(backup) === 0) return `no file at ${backup}`;
      const mode = (Deno.statSync(backup).mode ?? 0) & 0o777;
      return mode === 0o600 ? undefined : `mode ${mode.toString(8)}`;
    });

    await step(
      "rollback of the last migration drops the table",
      [...db, "--json", "rollback", "--no-backup"],
      (r) => exit(r, 0),
    );

    await step(
      "restore without --yes and without a terminal exits 2",
      [...db, "restore", backup],
      (r) => exit(r, 2),
    );

    await step("restore --yes brings the backup back", [
      ...db,
      "restore",
      "--restore",
      backup,
      "--yes",
    ], (r) => exit(r, 0));

    await step(
      "status after restore shows the backed-up state",
      [...db, "--json", "status"],
      (r) =>
        exit(r, 0) ??
          (states(r) === "202401010001:applied,202401010002:pending"
            ? undefined
            : `states ${states(r)}`),
    );

    await step(
      "test --ephemeral round-trips every migration on its own server",
      ["--dir", dir, "--json", "test", "--ephemeral"],
      (r) => exit(r, 0) ?? (r.json?.ok === true ? undefined : "ok is not true"),
    );
  } finally {
    await server.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  return results;
}

function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/** Parses flags, runs the scenario, prints the summary; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const out = (line: string) =>
    Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
  const binaryAt = args.indexOf("--binary");
  const runner = await chooseRunner({
    binary: binaryAt >= 0 ? args[binaryAt + 1] : undefined,
    deno: args.includes("--deno"),
  });
  out(`smoke: running ${runner.label}`);
  const results = await runSmoke(runner, out);
  const failed = results.filter((r) => !r.ok).length;
  out(`smoke: ${results.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);
