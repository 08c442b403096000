/** Throwaway db directories for tests that write their own migrations. */

/** A temp db directory with managed-migrations/; `write` adds or changes a file there. */
export interface DbDir {
  dir: string;
  write(name: string, text: string): Promise<void>;
  remove(): Promise<void>;
}

/** Creates a db directory holding `files` (names inside managed-migrations/). */
export async function makeDbDir(
  files: Record<string, string> = {},
): Promise<DbDir> {
  const dir = await Deno.makeTempDir({ prefix: "mm_db_" });
  await Deno.mkdir(`${dir}/managed-migrations`);
  const write = (name: string, text: string) =>
    Deno.writeTextFile(`${dir}/managed-migrations/${name}`, text);
  for (const [name, text] of Object.entries(files)) await write(name, text);
  return { dir, write, remove: () => Deno.remove(dir, { recursive: true }) };
}
