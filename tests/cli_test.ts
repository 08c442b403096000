import assert from "node:assert/strict";
import { runCli } from "./helpers/cli.ts";
import { pgTest } from "./helpers/postgres.ts";
import denoJson from "../deno.json" with { type: "json" };

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

Deno.test("--version prints the version from deno.json", async () => {
  const r = await runCli(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), denoJson.version);
});

Deno.test("an unknown command or option is a usage error (exit 2)", async () => {
  const r = await runCli(["migrat"]);
  assert.equal(r.code, 2);
  const o = await runCli(["migrate", "--frobnicate"]);
  assert.equal(o.code, 2);
  assert.match(o.stderr, /unknown option/);
});

Deno.test("invalid migration files exit 4 with one line naming the file, before connecting", async () => {
  const r = await runCli(["--dir", fixture("missing_down"), "migrate"], {
    env: { DATABASE_URL: "postgres://u:hunter22@127.0.0.1:1/db" },
  });
  assert.equal(r.code, 4);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /0001_a\.up\.sql/);
});

Deno.test("an unreachable server is one line with host and port, exit 1, password hidden", async () => {
  const r = await runCli(["--dir", fixture("basic"), "--json", "status"], {
    env: { DATABASE_URL: "postgres://u:hunter22@127.0.0.1:1/db" },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Cannot connect to 127\.0\.0\.1:1/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.doesNotMatch(r.stderr + r.stdout, /hunter22/);
  assert.equal((r.json as { error: { code: number } }).error.code, 1);
});

Deno.test("a missing --dir is exit 4 naming the directory", async () => {
  const r = await runCli(["--dir", "/nonexistent/db", "status"]);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /Cannot find the db directory "\/nonexistent\/db"/);
});

Deno.test("new creates a paired migration with a UTC YYYYMMDDHHMM version and rejects bad names", async () => {
  const dir = await Deno.makeTempDir();
  const r = await runCli(["--dir", dir, "--json", "new", "add_users"]);
  assert.equal(r.code, 0, r.stderr);
  const doc = r.json as { version: string; up: string; down: string };
  assert.match(doc.version, /^\d{12}$/);
  assert.ok((await Deno.stat(doc.up)).isFile);
  assert.ok((await Deno.stat(doc.down)).isFile);
  const second = await runCli(["--dir", dir, "--json", "new", "add_more"]);
  assert.equal(second.code, 0);
  assert.ok(
    BigInt((second.json as { version: string }).version) > BigInt(doc.version),
  );
  const bad = await runCli(["--dir", dir, "new", "bad name!"]);
  assert.equal(bad.code, 2);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("wait gives up after --timeout on a closed port (exit 1)", async () => {
  const r = await runCli(["wait", "--timeout", "1s"], {
    env: { DATABASE_URL: "postgres://u@127.0.0.1:1/db" },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Gave up after 1\.0s/);
});

Deno.test("every command has --help with an example", async () => {
  for (
    const cmd of [
      "migrate",
      "rollback",
      "seed",
      "status",
      "backup",
      "restore",
      "test",
      "lint",
      "new",
      "baseline",
      "repair",
      "wait",
    ]
  ) {
    const r = await runCli([cmd, "--help"]);
    assert.equal(r.code, 0, cmd);
    assert.match(r.stdout, /Example/, cmd);
  }
});

pgTest("a missing database is one line naming it, exit 1", async (db) => {
  const url = db.url.replace(/\/[^/?]+(\?|$)/, "/no_such_database_here$1");
  const r = await runCli(["--dir", fixture("basic"), "status"], {
    env: { DATABASE_URL: url },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /database "no_such_database_here" does not exist/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
}, { versions: [15] });

pgTest(
  "--quiet prints only the result; --json prints one JSON document and logs on stderr",
  async (db) => {
    const env = { DATABASE_URL: db.url };
    const quiet = await runCli([
      "--dir",
      fixture("basic"),
      "--quiet",
      "migrate",
      "--no-backup",
    ], { env });
    assert.equal(quiet.code, 0, quiet.stderr);
    // Guardrail warnings stay visible; progress lines do not.
    assert.doesNotMatch(quiet.stderr, /Applying|Applied/);
    assert.match(quiet.stderr, /\[empty-migration\]/);
    assert.equal(quiet.stdout.trim(), "Applied 3 migrations");
    const json = await runCli([
      "--dir",
      fixture("basic"),
      "--json",
      "rollback",
      "--no-backup",
    ], { env });
    assert.equal(json.code, 0, json.stderr);
    assert.ok(json.json, "stdout is one JSON document");
    assert.match(json.stderr, /Rolled back 0003_add_name_and_posts/);
  },
  { versions: [15] },
);

pgTest("wait returns as soon as the server accepts connections", async (db) => {
  const r = await runCli(["--json", "wait", "--timeout", "10s"], {
    env: { DATABASE_URL: db.url },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((r.json as { ready: boolean }).ready, true);
}, { versions: [15] });
