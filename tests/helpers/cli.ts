/** Runs main.ts as a subprocess, the way users run the binary. */

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

/** What one CLI run printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (undefined when it is not JSON). */
  json: unknown;
}

/** Options for runCli(). */
export interface CliOptions {
  /** Extra environment; the variables named in `unset` are removed. */
  env?: Record<string, string>;
  unset?: string[];
  cwd?: string;
  stdin?: string;
}

/** Runs `deno run -A main.ts ...args` and collects its output. */
export async function runCli(
  args: string[],
  options: CliOptions = {},
): Promise<CliResult> {
  const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1" };
  for (
    const name of [
      "POSTGRES_URL",
      "DATABASE_URL",
      "ALLOW_BREAKING_MIGRATIONS",
      ...(options.unset ?? []),
    ]
  ) delete env[name];
  Object.assign(env, options.env ?? {});
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "--config", CONFIG, MAIN, ...args],
    env,
    clearEnv: true,
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = command.spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code: out.code, stdout, stderr, json };
}
