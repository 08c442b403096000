/**
 * Runs scripts/smoke.ts as CI does where no binary can be built: `deno run`
 * of main.ts with the compiled binary's permissions, so a missing permission
 * fails here as it would in the binary.
 */

import assert from "node:assert/strict";
import { findServerBinaries } from "../src/pg_server/ephemeral.ts";

const SMOKE = new URL("../scripts/smoke.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

const serverBinaries = await findServerBinaries().catch(() => undefined);

Deno.test({
  name:
    "smoke main() passes every step of the end-to-end scenario through deno run with the binary's permissions",
  // The scenario starts its own throwaway server from local binaries.
  ignore: serverBinaries === undefined,
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--config",
        CONFIG,
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-run",
        "--allow-net",
        "--allow-sys=uid",
        SMOKE,
        "--deno",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    const steps = stdout.split("\n").filter((l) => /^(PASS|FAIL) /.test(l));
    const failed = steps.filter((l) => l.startsWith("FAIL"));
    assert.deepEqual(failed, [], `${stdout}\n${stderr}`);
    assert.ok(steps.length >= 15, stdout);
    assert.match(stdout, /with the compiled binary's permissions/);
    assert.equal(out.code, 0, stderr);
  },
});
