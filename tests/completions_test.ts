/** `completions SHELL` and the hidden `complete` callback its scripts use. */

import assert from "node:assert/strict";
import { buildProgram } from "../src/cli/program.ts";
import { runCli } from "./helpers/cli.ts";

const program = buildProgram(() => Promise.resolve());
/** Every visible command with its visible long options, from commander itself. */
const COMMANDS = program.commands
  .filter((c) => !(c as unknown as { _hidden: boolean })._hidden)
  .map((c) => ({
    name: c.name(),
    longs: c.createHelp().visibleOptions(c)
      .map((o) => o.long)
      .filter((l): l is string => l !== undefined),
  }));

function which(tool: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${tool}`).isFile) return `${dir}/${tool}`;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

async function syntaxCheck(
  shell: string,
  args: string[],
  script: string,
): Promise<{ code: number; stderr: string }> {
  const file = await Deno.makeTempFile({ suffix: `.${shell}` });
  try {
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(shell, {
      args: [...args, file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    await Deno.remove(file);
  }
}

for (
  const [shell, checkArgs] of [
    ["bash", ["-n"]],
    ["zsh", ["-n"]],
    ["fish", ["--no-execute"]],
  ] as const
) {
  Deno.test({
    name:
      `completions run() prints a ${shell} script that calls back into managed-migrate and passes ${shell} ${
        checkArgs.join(" ")
      }`,
    ignore: which(shell) === undefined, // not installed: nothing to check the syntax with
    async fn() {
      const res = await runCli(["completions", shell]);
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /managed-migrate complete --/);
      const check = await syntaxCheck(shell, [...checkArgs], res.stdout);
      assert.equal(check.code, 0, check.stderr);
    },
  });
}

Deno.test("completions run() refuses a shell it does not support with exit 2", async () => {
  const res = await runCli(["completions", "tcsh"]);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /tcsh/);
  assert.equal(res.stdout, "");
});

Deno.test("completions run() answers a request with every command", async () => {
  const res = await runCli(["complete", "--", ""]);
  assert.equal(res.code, 0, res.stderr);
  const offered = res.stdout.split("\n").map((l) => l.split("\t")[0]);
  for (const { name } of COMMANDS) assert.ok(offered.includes(name), name);
  assert.ok(!offered.includes("complete"), "the callback stays hidden");
});

Deno.test("completions run() answers a request with each command's long options", async () => {
  assert.ok(COMMANDS.length >= 13);
  await Promise.all(COMMANDS.map(async ({ name, longs }) => {
    const res = await runCli(["complete", "--", name, "--"]);
    assert.equal(res.code, 0, res.stderr);
    const offered = res.stdout.split("\n").map((l) => l.split("\t")[0]);
    for (const long of longs) {
      assert.ok(offered.includes(long), `${name} ${long}`);
    }
  }));
});

Deno.test("completions run() offers an option's choices and falls back to file names for paths", async () => {
  const format = await runCli(["complete", "--", "lint", "--format", ""]);
  assert.deepEqual(
    format.stdout.trim().split("\n").map((l) => l.split("\t")[0]),
    ["text", "json", "github", ":4"],
  );
  // ":0" is tab's default directive: the shell completes file names.
  const restore = await runCli(["complete", "--", "restore", ""]);
  assert.equal(restore.stdout.trim(), ":0");
});
