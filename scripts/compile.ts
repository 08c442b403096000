/**
 * `deno task compile [--target TRIPLE]... [--all]`: builds the one-file
 * executable with `deno compile` and narrow permissions.
 *
 * - no flag: `dist/managed-migrate` for the host;
 * - `--target TRIPLE` (repeatable) or `--all`: `dist/managed-migrate-<TRIPLE>`.
 *
 * `deno compile` embeds the program in a runtime base ("denort") that it
 * downloads from Deno's download host on first use. For machines without that
 * access, a base is taken from `DENORT_BIN_<TRIPLE>` (e.g.
 * `DENORT_BIN_AARCH64_APPLE_DARWIN`) or from `DENORT_BIN`, which deno itself
 * reads; `DENORT_BIN` is used only for the target its file format matches.
 * Where no base can be had, this script says so and exits 0 without writing
 * anything: never a fake binary, never a partial file (deno writes to a
 * temporary file and renames it).
 */

import denoJson from "../deno.json" with { type: "json" };

/** The targets `--all` builds: x86_64/aarch64 Linux and macOS. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
] as const;

/** One of TARGETS. */
export type Target = typeof TARGETS[number];

/**
 * Programs the binary may spawn, by name (deno resolves each on PATH when the
 * binary starts): the PostgreSQL client tools for backup/restore, and the
 * server binaries plus runuser/su that `test --ephemeral` starts a throwaway
 * cluster with. Keep in step with the Deno.Command / dax calls in src/.
 */
export const RUN_ALLOW: readonly string[] = [
  "pg_dump",
  "psql",
  "pg_restore",
  "initdb",
  "pg_ctl",
  "postgres",
  "runuser",
  "su",
];

/**
 * Deno resolves a bare name in --allow-run on PATH once, at start-up, and
 * refuses the same program by any other path. The tools are run by absolute
 * path when `--pg-bin`/PG_BIN names a directory or when the server binaries
 * are found off PATH (Debian keeps initdb and pg_ctl only in
 * /usr/lib/postgresql/N/bin), so the packaged layouts are listed too:
 * Debian/Ubuntu (also the official Docker images), PGDG RPMs, source builds.
 */
export const RUN_ALLOW_DIRS: readonly string[] = [
  ...[11, 12, 13, 14, 15, 16, 17, 18].flatMap((v) => [
    `/usr/lib/postgresql/${v}/bin`,
    `/usr/pgsql-${v}/bin`,
  ]),
  "/usr/local/pgsql/bin",
];

/** --allow-run's list: RUN_ALLOW by name, and the PostgreSQL ones in RUN_ALLOW_DIRS. */
export function runAllowList(): string[] {
  const pgTools = RUN_ALLOW.filter((t) => t !== "runuser" && t !== "su");
  return [
    ...RUN_ALLOW,
    ...RUN_ALLOW_DIRS.flatMap((dir) => pgTools.map((t) => `${dir}/${t}`)),
  ];
}

/** The permission flags baked into the binary; smoke.ts runs main.ts with the same. */
export const PERMISSION_FLAGS: readonly string[] = [
  `--allow-run=${runAllowList().join(",")}`,
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
  // Deno.uid(): `test --ephemeral` as root runs the server as user postgres.
  "--allow-sys=uid",
];

/** Where the host binary goes, relative to the repository root. */
export const HOST_OUTPUT = "dist/managed-migrate";

const ROOT = new URL("../", import.meta.url);
const rootPath = (rel: string) => new URL(rel, ROOT).pathname;

/** How long the runtime-base probe (a download, when one is needed) may take. */
const PROBE_TIMEOUT_MS = 120_000;

/** What the script should do for one target. */
export type BaseChoice =
  | { kind: "env"; path: string; variable: string }
  | { kind: "deno"; note?: string };

/** The target triple of the machine running this script. */
export function hostTarget(): string {
  return Deno.build.target;
}

/** `DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU` for `x86_64-unknown-linux-gnu`. */
export function targetVariable(target: string): string {
  return `DENORT_BIN_${target.toUpperCase().replaceAll("-", "_")}`;
}

/**
 * The target an executable was built for, from its ELF or Mach-O header, or
 * undefined when the format is not one of TARGETS'.
 */
export function executableTarget(header: Uint8Array): Target | undefined {
  const view = new DataView(header.buffer, header.byteOffset, header.length);
  if (header.length >= 20 && view.getUint32(0) === 0x7f454c46) {
    // ELF: e_machine at offset 18 (little endian on both targets).
    const machine = view.getUint16(18, true);
    if (machine === 0x3e) return "x86_64-unknown-linux-gnu";
    if (machine === 0xb7) return "aarch64-unknown-linux-gnu";
    return undefined;
  }
  if (header.length >= 8 && view.getUint32(0, true) === 0xfeedfacf) {
    // 64-bit Mach-O: cputype at offset 4.
    const cpu = view.getUint32(4, true);
    if (cpu === 0x01000007) return "x86_64-apple-darwin";
    if (cpu === 0x0100000c) return "aarch64-apple-darwin";
  }
  return undefined;
}

async function readHeader(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const buf = new Uint8Array(64);
  const n = await file.read(buf);
  return buf.subarray(0, n ?? 0);
}

/**
 * Chooses the runtime base for `target`: `DENORT_BIN_<TRIPLE>`, else
 * `DENORT_BIN` when it is built for that target (or, when its format cannot
 * be read, when the target is the host), else deno's own cache/download.
 * Throws when a named base does not exist.
 */
export async function chooseBase(
  target: string,
  env: (name: string) => string | undefined,
): Promise<BaseChoice> {
  const perTarget = targetVariable(target);
  for (const variable of [perTarget, "DENORT_BIN"]) {
    const path = env(variable);
    if (path === undefined || path === "") continue;
    let header: Uint8Array;
    try {
      header = await readHeader(path);
    } catch (error) {
      throw new Error(
        `Cannot use ${variable} "${path}": ${
          (error as Error).message
        }: point it at a denort binary of Deno ${Deno.version.deno}`,
      );
    }
    if (variable === perTarget) return { kind: "env", path, variable };
    const built = executableTarget(header);
    if (built === target || (built === undefined && target === hostTarget())) {
      return { kind: "env", path, variable };
    }
    return {
      kind: "deno",
      note: `DENORT_BIN "${path}" is built for ${
        built ?? "an unknown platform"
      }, not ${target}: set ${perTarget} for this target`,
    };
  }
  return { kind: "deno" };
}

/** Environment for a `deno compile` child: DENORT_BIN set to the chosen base, or removed. */
function childEnv(base: BaseChoice): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.DENORT_BIN;
  if (base.kind === "env") env.DENORT_BIN = base.path;
  env.NO_COLOR = "1";
  return env;
}

/** The result of probing for a runtime base. */
export type Probe = { ok: true } | { ok: false; reason: string };

/**
 * Compiles a one-line program for `target` into a temporary directory, so a
 * missing runtime base shows up in a second instead of after a full build
 * (and a downloaded base is cached for the real build). On the host, the
 * probe binary is run too: a DENORT_BIN that is not a working denort (the
 * full `deno` binary, another version) is caught here.
 */
export async function probeBase(
  target: string,
  base: BaseChoice,
): Promise<Probe> {
  const dir = await Deno.makeTempDir({ prefix: "managed-migrate-probe-" });
  try {
    const source = `${dir}/probe.ts`;
    const output = `${dir}/probe`;
    await Deno.writeTextFile(source, `console.log("probe-ok");\n`);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(Deno.execPath(), {
        args: [
          "compile",
          "--no-config",
          "--quiet",
          "--target",
          target,
          "--output",
          output,
          source,
        ],
        env: childEnv(base),
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      }).output();
    } catch (error) {
      return {
        ok: false,
        reason: `deno compile did not finish within ${
          PROBE_TIMEOUT_MS / 1000
        }s (${(error as Error).message})`,
      };
    }
    if (!out.success) {
      return { ok: false, reason: compileFailure(decode(out.stderr)) };
    }
    if (target !== hostTarget()) return { ok: true };
    const run = await new Deno.Command(output, {
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output().catch((error: Error) => error);
    if (run instanceof Error || decode(run.stdout).trim() !== "probe-ok") {
      const source = base.kind === "env"
        ? `${base.variable} "${base.path}"`
        : "the runtime base";
      return {
        ok: false,
        reason:
          `a binary built on ${source} does not run the program: it is not a denort of Deno ${Deno.version.deno}`,
      };
    }
    return { ok: true };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The informative line of a failed `deno compile` (the cause, not the backtrace). */
export function compileFailure(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l);
  const cause = lines.find((l) =>
    /^\d+: /.test(l) && !/^0: Setting up/.test(l)
  );
  const error = lines.find((l) => l.startsWith("error:"));
  const text = (cause ?? error ?? lines.at(-1) ?? "unknown error")
    .replace(/^\d+: /, "");
  return /base binary|denort|error sending request|download/i.test(stderr)
    ? `no runtime base (denort) for Deno ${Deno.version.deno}: ${text}`
    : text;
}

function decode(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** The `deno compile` arguments for one target (without the base, which goes in env). */
export function compileArgs(target: string, output: string): string[] {
  return [
    "compile",
    ...PERMISSION_FLAGS,
    // Resolve npm packages from deno's cache and embed only those the module
    // graph reaches: the local node_modules also holds test-only packages
    // (testcontainers, embedded PostgreSQL binaries) worth ~90 MB.
    "--node-modules-dir=none",
    "--exclude-unused-npm",
    // The parser is imported lazily; include it (with its .wasm, which it
    // reads from beside its module) whatever the graph analysis finds.
    "--include",
    denoJson.imports["libpg-query"],
    "--target",
    target,
    "--output",
    output,
    rootPath("main.ts"),
  ];
}

/** Builds one target; returns a line for the summary. Throws on a real failure. */
async function build(
  target: string,
  output: string,
  log: (line: string) => void,
): Promise<"built" | "skipped"> {
  const base = await chooseBase(target, (n) => Deno.env.get(n));
  if (base.kind === "deno" && base.note) log(`note: ${base.note}`);
  const probe = await probeBase(target, base);
  if (!probe.ok) {
    if (base.kind === "env") {
      throw new Error(`Cannot compile for ${target}: ${probe.reason}`);
    }
    log(
      `skipped ${target}: ${probe.reason}; set DENORT_BIN (or ${
        targetVariable(target)
      }) to a denort binary of Deno ${Deno.version.deno} to build here, nothing was written`,
    );
    return "skipped";
  }
  await Deno.mkdir(rootPath("dist"), { recursive: true });
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(target, output),
    cwd: rootPath("."),
    env: childEnv(base),
    clearEnv: true,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await Deno.remove(output).catch(() => {});
    throw new Error(
      `Cannot compile for ${target}: ${compileFailure(decode(out.stderr))}`,
    );
  }
  if (target === hostTarget()) {
    const version = await new Deno.Command(output, {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const printed = decode(version.stdout).trim();
    if (!version.success || printed !== denoJson.version) {
      await Deno.remove(output).catch(() => {});
      throw new Error(
        `Cannot compile for ${target}: the built binary printed "${printed}" for --version, not "${denoJson.version}": removed it`,
      );
    }
  }
  const { size } = await Deno.stat(output);
  log(
    `built ${output} (${(size / 1024 / 1024).toFixed(1)} MiB, ${
      ((performance.now() - started) / 1000).toFixed(1)
    }s)`,
  );
  return "built";
}

/** Parses `--target T` (repeatable), `--target=T`, `--all`; returns [target, output] pairs. */
export function parseTargets(args: string[]): Array<[string, string]> {
  const targets: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--all") targets.push(...TARGETS);
    else if (arg === "--target") targets.push(args[++i] ?? "");
    else if (arg.startsWith("--target=")) targets.push(arg.slice(9));
    else {throw new Error(
        `Unknown argument "${arg}": use --target TRIPLE or --all`,
      );}
  }
  for (const t of targets) {
    if (!(TARGETS as readonly string[]).includes(t)) {
      throw new Error(
        `Unknown target "${t}": use one of ${TARGETS.join(", ")}`,
      );
    }
  }
  if (targets.length === 0) return [[hostTarget(), rootPath(HOST_OUTPUT)]];
  return [...new Set(targets)].map((t) => [
    t,
    rootPath(`${HOST_OUTPUT}-${t}`),
  ]);
}

/** Runs the build; returns the exit code (0 also when skipped for want of a base). */
export async function main(args: string[]): Promise<number> {
  const log = (line: string) =>
    Deno.stderr.writeSync(new TextEncoder().encode(`compile: ${line}\n`));
  let pairs: Array<[string, string]>;
  try {
    pairs = parseTargets(args);
  } catch (error) {
    log(`error: ${(error as Error).message}`);
    return 2;
  }
  let failed = false;
  for (const [target, output] of pairs) {
    try {
      await build(target, output, log);
    } catch (error) {
      log(`error: ${(error as Error).message}`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);
