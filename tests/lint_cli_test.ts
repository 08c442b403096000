/** `managed-migrate lint` as users run it: formats, exit codes, --explain (no database needed). */
import assert from "node:assert/strict";
import { runCli } from "./helpers/cli.ts";

async function makeDb(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "mm_lint_" });
  await Deno.mkdir(`${dir}/managed-migrations`);
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/managed-migrations/${name}`, text);
  }
  return dir;
}

const BREAKING = {
  "202401010001_init.up.sql": "CREATE TABLE users (id int, email text);\n",
  "202401010001_init.down.sql": "DROP TABLE users;\n",
  "202401010002_drop.up.sql": "-- cleanup\nDROP TABLE legacy;\n",
  "202401010002_drop.down.sql": "CREATE TABLE legacy (id int);\n",
};

const WARNING_ONLY = {
  "1_idx.up.sql": "CREATE INDEX users_email_idx ON users (email);\n",
  "1_idx.down.sql": "DROP INDEX users_email_idx;\n",
};

Deno.test("lint exits 3 on a breaking finding and prints file:line:column, rule and help", async () => {
  const dir = await makeDb(BREAKING);
  const r = await runCli(["--dir", dir, "lint"]);
  assert.equal(r.code, 3);
  const file = `${dir}/managed-migrations/202401010002_drop.up.sql`;
  assert.match(
    r.stdout,
    new RegExp(
      `^${
        file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
      }:2:1: error\\[drop-table\\] Dropping table "legacy"`,
      "m",
    ),
  );
  assert.match(r.stdout, /^ {2}help: /m);
  assert.match(r.stdout, /Found 1 error in 2 files/);
  // Down files are never linted by default.
  assert.doesNotMatch(r.stdout, /down\.sql/);
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/);
});

Deno.test("lint --format json prints the findings document and exits 3", async () => {
  const dir = await makeDb(BREAKING);
  const r = await runCli(["--dir", dir, "lint", "--format", "json"]);
  assert.equal(r.code, 3);
  const doc = r.json as { findings: Record<string, unknown>[] };
  assert.deepEqual(doc.findings.map((f) => Object.keys(f)), [[
    "rule",
    "severity",
    "file",
    "line",
    "column",
    "message",
    "help",
    "allowed",
  ]]);
  assert.deepEqual(
    [
      doc.findings[0].rule,
      doc.findings[0].line,
      doc.findings[0].column,
      doc.findings[0].allowed,
    ],
    ["drop-table", 2, 1, false],
  );
});

Deno.test("lint --json prints the same findings document", async () => {
  const dir = await makeDb(BREAKING);
  const r = await runCli(["--json", "--dir", dir, "lint"]);
  assert.equal(r.code, 3);
  assert.equal((r.json as { findings: unknown[] }).findings.length, 1);
});

Deno.test("lint --format github prints escaped workflow annotations", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mm_lint_gh_" });
  const file = `${dir}/1_a,b:c.up.sql`;
  await Deno.writeTextFile(
    file,
    'CREATE INDEX i ON t (a);\nALTER TABLE t RENAME COLUMN "50%" TO b;\n',
  );
  const r = await runCli(["lint", "--format", "github", file]);
  assert.equal(r.code, 3);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 2);
  const escaped = file.replace(/,/g, "%2C").replace(/:/g, "%3A");
  assert.match(
    lines[0],
    new RegExp(
      `^::warning file=${
        escaped.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
      },line=1,col=1,title=create-index-blocking::`,
    ),
  );
  assert.match(
    lines[1],
    /^::error file=.*,line=2,col=1,title=rename-column::Renaming column "50%25"/,
  );
  assert.match(lines[1], /%0Ahelp: /);
  for (const line of lines) assert.doesNotMatch(line.split("::")[2], /\n/);
});

Deno.test("lint exits 0 on warnings and 3 on warnings under --strict", async () => {
  const dir = await makeDb(WARNING_ONLY);
  const plain = await runCli(["--dir", dir, "lint"]);
  assert.equal(plain.code, 0);
  assert.match(plain.stdout, /warning\[create-index-blocking\]/);
  assert.match(plain.stdout, /Found 1 warning in 1 file/);
  const strict = await runCli(["--dir", dir, "lint", "--strict"]);
  assert.equal(strict.code, 3);
});

Deno.test("lint lets breaking findings through with --allow-breaking or ALLOW_BREAKING_MIGRATIONS=true", async () => {
  const dir = await makeDb(BREAKING);
  const flag = await runCli([
    "--dir",
    dir,
    "lint",
    "--allow-breaking",
    "--format",
    "json",
  ]);
  assert.equal(flag.code, 0);
  const doc = flag.json as { findings: { rule: string; allowed: boolean }[] };
  assert.deepEqual(doc.findings.map((f) => [f.rule, f.allowed]), [[
    "drop-table",
    true,
  ]]);
  const env = await runCli(["--dir", dir, "lint"], {
    env: { ALLOW_BREAKING_MIGRATIONS: "true" },
  });
  assert.equal(env.code, 0);
  assert.match(env.stdout, /\(allowed\)/);
});

Deno.test("lint PATH lints a file or a directory, skipping down files", async () => {
  const dir = await makeDb({
    ...WARNING_ONLY,
    "2_bad.up.sql": "SELECT 1;\nALTER TABLE t ADD COLUMN x int DEFALT 0;\n",
    "2_bad.down.sql": "DROP TABLE everything;\n",
  });
  const r = await runCli([
    "lint",
    "--format",
    "json",
    `${dir}/managed-migrations`,
  ]);
  assert.equal(r.code, 3);
  const doc = r.json as {
    findings: { rule: string; line: number; column: number }[];
  };
  assert.deepEqual(doc.findings.map((f) => [f.rule, f.line, f.column]), [
    ["create-index-blocking", 1, 1],
    ["syntax-error", 2, 32],
  ]);
  const one = await runCli(["lint", `${dir}/managed-migrations/1_idx.up.sql`]);
  assert.equal(one.code, 0);
  assert.match(one.stdout, /in 1 file/);
});

Deno.test("lint reports an empty up migration as a warning and a clean directory as no findings", async () => {
  const dir = await makeDb({
    "1_a.up.sql": "-- placeholder\n",
    "1_a.down.sql": "",
    "2_b.up.sql": "CREATE TABLE t (id int);\n",
    "2_b.down.sql": "DROP TABLE t;\n",
  });
  const r = await runCli(["--dir", dir, "lint"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /1_a\.up\.sql:1:1: warning\[empty-migration\]/);
  await Deno.remove(`${dir}/managed-migrations/1_a.up.sql`);
  await Deno.remove(`${dir}/managed-migrations/1_a.down.sql`);
  const clean = await runCli(["--dir", dir, "lint"]);
  assert.equal(clean.code, 0);
  assert.equal(clean.stdout.trim(), "No findings in 1 file");
});

Deno.test("lint --explain prints a rule's rationale and safe alternative; an unknown rule exits 2", async () => {
  const r = await runCli(["lint", "--explain", "set-not-null"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^set-not-null \(warning, locking\)/);
  assert.match(r.stdout, /Why: /);
  assert.match(r.stdout, /NOT VALID/);
  const bad = await runCli(["lint", "--explain", "no-such-rule"]);
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /^error: Unknown rule "no-such-rule": expected one of drop-table/m,
  );
});

Deno.test("lint exits 4 for a db directory with an unpaired migration", async () => {
  const dir = await makeDb({ "1_a.up.sql": "SELECT 1;\n" });
  const r = await runCli(["--dir", dir, "lint"]);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /Unpaired migration/);
});
