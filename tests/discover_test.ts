import assert from "node:assert/strict";
import { discoverMigrations, discoverSeeds } from "../src/files/discover.ts";
import { parseDirectives } from "../src/files/directives.ts";
import { MigrationFilesError } from "../src/errors.ts";

const fixture = (name: string) =>
  new URL(`./fixtures/${name}`, import.meta.url).pathname;

Deno.test("discoverMigrations() reads pairs in numeric order with SHA-256 checksums", async () => {
  const migrations = await discoverMigrations(fixture("basic"));
  assert.deepEqual(migrations.map((m) => m.id), [
    "0001_create_users",
    "0002_placeholder",
    "0003_add_name_and_posts",
  ]);
  const bytes = await Deno.readFile(migrations[0].upPath);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  assert.equal(
    migrations[0].checksum,
    Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
  );
  assert.equal(migrations[2].down.allow.includes("drop-column"), true);
});

Deno.test("discoverMigrations() orders versions numerically, not as text", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/managed-migrations`);
  for (const v of ["9", "10", "100", "20"]) {
    await Deno.writeTextFile(`${dir}/managed-migrations/${v}_m.up.sql`, "");
    await Deno.writeTextFile(`${dir}/managed-migrations/${v}_m.down.sql`, "");
  }
  const migrations = await discoverMigrations(dir);
  assert.deepEqual(migrations.map((m) => m.version), ["9", "10", "20", "100"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("discoverMigrations() rejects an up file without its down file", async () => {
  await assert.rejects(
    discoverMigrations(fixture("missing_down")),
    (e: unknown) => {
      assert.ok(e instanceof MigrationFilesError);
      assert.equal(e.exitCode, 4);
      assert.match(e.message, /0001_a\.up\.sql/);
      assert.match(e.message, /0001_a\.down\.sql" is missing/);
      return true;
    },
  );
});

Deno.test("discoverMigrations() rejects a duplicate version", async () => {
  await assert.rejects(
    discoverMigrations(fixture("duplicate_version")),
    (e: unknown) => {
      assert.ok(e instanceof MigrationFilesError);
      assert.match(e.message, /Duplicate migration version/);
      return true;
    },
  );
});

Deno.test("discoverMigrations() rejects a misnamed .sql file and ignores other files", async () => {
  await assert.rejects(
    discoverMigrations(fixture("bad_name")),
    (e: unknown) => {
      assert.ok(e instanceof MigrationFilesError);
      assert.match(e.message, /create_a\.up\.sql/);
      assert.doesNotMatch(e.message, /README/);
      return true;
    },
  );
});

Deno.test("discoverMigrations() rejects a file that is not valid UTF-8", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/managed-migrations`);
  await Deno.writeFile(
    `${dir}/managed-migrations/1_a.up.sql`,
    new Uint8Array([0x53, 0xff, 0xfe]),
  );
  await Deno.writeTextFile(`${dir}/managed-migrations/1_a.down.sql`, "");
  await assert.rejects(discoverMigrations(dir), /not valid UTF-8/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("discoverSeeds() lists seeds in file-name order", async () => {
  const seeds = await discoverSeeds(fixture("seeds"));
  assert.deepEqual(seeds.map((s) => s.name), ["001_red", "002_blue"]);
});

Deno.test("parseDirectives() honours only whole comment lines at the top", () => {
  const { directives } = parseDirectives(
    "-- managed-migrate: no-transaction\n-- managed-migrate: lock-timeout=10s\n-- managed-migrate: allow=drop-column,rename-column\nSELECT 1;\n-- managed-migrate: statement-timeout=1s\n",
  );
  assert.equal(directives.noTransaction, true);
  assert.equal(directives.lockTimeoutMs, 10_000);
  assert.deepEqual(directives.allow, ["drop-column", "rename-column"]);
  assert.equal(directives.statementTimeoutMs, undefined);
  const inString = parseDirectives(
    "SELECT '-- managed-migrate: no-transaction';\n",
  );
  assert.equal(inString.directives.noTransaction, false);
  const inProse = parseDirectives(
    "-- we do not use managed-migrate: no-transaction here\n",
  );
  assert.equal(inProse.directives.noTransaction, false);
});

Deno.test("parseDirectives() reports an unknown directive", () => {
  const { problems } = parseDirectives("-- managed-migrate: no-transactoin\n");
  assert.equal(problems.length, 1);
  assert.equal(problems[0].line, 1);
});
