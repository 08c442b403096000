/**
 * The common path stays light: `--version`, `status` and an up-to-date
 * `migrate` must not load the parser's WASM (libpg-query), dax or
 * testcontainers.
 *
 * How: main.ts runs with a copy of deno.json whose import map points those
 * packages at a trap module that records its name in a file when evaluated.
 * Every import of them goes through the bare specifier, so a load anywhere
 * (static or lazy) leaves a mark; the same run without traps is the control.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { pgTest } from "./helpers/postgres.ts";
import { runCli } from "./helpers/cli.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TRAPPED = ["libpg-query", "dax", "testcontainers"] as const;

interface Traps {
  config: string;
  marks: string;
  dir: string;
}

async function makeTraps(): Promise<Traps> {
  const dir = await Deno.makeTempDir({ prefix: "mm-startup-" });
  const marks = `${dir}/marks.txt`;
  await Deno.writeTextFile(marks, "");
  const imports: Record<string, string> = { ...denoJson.imports };
  for (const name of TRAPPED) {
    const trap = `${dir}/trap_${name}.js`;
    await Deno.writeTextFile(
      trap,
      `Deno.writeTextFileSync(${JSON.stringify(marks)}, ${
        JSON.stringify(name + "\n")
      }, { append: true });\nexport default undefined;\n`,
    );
    imports[name] = new URL(`file://${trap}`).href;
  }
  const config = `${dir}/deno.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      imports,
      // The copy lives outside the repository: use deno's npm cache.
      nodeModulesDir: "none",
    }),
  );
  return { config, marks, dir };
}

async function runTrapped(
  traps: Traps,
  args: string[],
): Promise<{ code: number; stderr: string; loaded: string[] }> {
  await Deno.writeTextFile(traps.marks, "");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--config",
      traps.config,
      `${ROOT}main.ts`,
      ...args,
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const loaded = (await Deno.readTextFile(traps.marks)).split("\n").filter((
    l,
  ) => l);
  return {
    code: out.code,
    stderr: new TextDecoder().decode(out.stderr),
    loaded: [...new Set(loaded)],
  };
}

Deno.test("run() --version loads neither libpg-query, dax nor testcontainers", async () => {
  const traps = await makeTraps();
  try {
    const res = await runTrapped(traps, ["--version"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr, "");
    assert.deepEqual(res.loaded, []);
  } finally {
    await Deno.remove(traps.dir, { recursive: true });
  }
});

pgTest(
  "run() status and an up-to-date migrate load neither libpg-query, dax nor testcontainers",
  async (db) => {
    const traps = await makeTraps();
    try {
      const dir = `${traps.dir}/db`;
      await Deno.mkdir(`${dir}/managed-migrations`, { recursive: true });
      await Deno.writeTextFile(
        `${dir}/managed-migrations/202401010001_t.up.sql`,
        "CREATE TABLE t (id int);\n",
      );
      await Deno.writeTextFile(
        `${dir}/managed-migrations/202401010001_t.down.sql`,
        "DROP TABLE t;\n",
      );
      const common = ["--dir", dir, "--database-url", db.url];
      const applied = await runCli([...common, "migrate", "--no-backup"]);
      assert.equal(applied.code, 0, applied.stderr);

      const status = await runTrapped(traps, [...common, "status", "--json"]);
      assert.equal(status.code, 0, status.stderr);
      assert.deepEqual(status.loaded, []);

      const upToDate = await runTrapped(traps, [...common, "migrate"]);
      assert.equal(upToDate.code, 0, upToDate.stderr);
      assert.deepEqual(upToDate.loaded, []);

      // Control: the traps do fire where the parser is needed.
      const lint = await runTrapped(traps, ["--dir", dir, "lint"]);
      assert.ok(lint.loaded.includes("libpg-query"), lint.stderr);
    } finally {
      await Deno.remove(traps.dir, { recursive: true });
    }
  },
  { versions: [15] },
);
