/** `new NAME`: creates the up/down pair with the current UTC YYYYMMDDHHMM version. */

import type { CommandContext } from "./context.ts";
import { MigrationFilesError, UsageError } from "../errors.ts";
import {
  discoverMigrations,
  joinPath,
  MIGRATIONS_DIR,
} from "../files/discover.ts";

/** The `YYYYMMDDHHMM` version for a moment, in UTC. */
export function versionFor(date: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${date.getUTCFullYear()}${p(date.getUTCMonth() + 1)}${
    p(date.getUTCDate())
  }${p(date.getUTCHours())}${p(date.getUTCMinutes())}`;
}

/** Runs `new`. */
export async function run(
  ctx: CommandContext,
  _options: Record<string, unknown>,
  args: string[],
): Promise<number> {
  const name = args[0] ?? "";
  if (!/^[A-Za-z0-9_-]+$/.test(name)) {
    throw new UsageError(
      `Invalid migration name "${name}": use letters, digits, _ and - only, like add_users_email`,
    );
  }
  const dir = joinPath(ctx.config.dir, MIGRATIONS_DIR);
  await Deno.mkdir(dir, { recursive: true });
  const existing = await discoverMigrations(ctx.config.dir);
  // Two migrations made in the same minute (or a clock behind the newest
  // version) take the next free version, so order always follows creation.
  let version = BigInt(versionFor(new Date()));
  const newest = existing.at(-1);
  if (newest && BigInt(newest.version) >= version) {
    version = BigInt(newest.version) + 1n;
  }
  const id = `${version}_${name}`;
  const up = joinPath(dir, `${id}.up.sql`);
  const down = joinPath(dir, `${id}.down.sql`);
  try {
    await Deno.writeTextFile(up, `-- ${name}: write the change here\n`, {
      createNew: true,
    });
    await Deno.writeTextFile(down, `-- ${name}: undo the up migration here\n`, {
      createNew: true,
    });
  } catch (error) {
    throw new MigrationFilesError(
      `Cannot create "${up}": ${(error as Error).message}`,
      up,
    );
  }
  ctx.reporter.result(
    { version: version.toString(), name, up, down },
    () => `Created ${up}\nCreated ${down}`,
  );
  return 0;
}
