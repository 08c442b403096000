import { run } from "./src/cli/run.ts";

Deno.exitCode = await run(Deno.args);
