/**
 * Times `managed-migrate lint` over 1,000 generated migration files (one CLI
 * run) against squawk (npm `squawk-cli`, installed into a temp dir at bench
 * time) on the same files, and prints both times and the ratio.
 * Target: ours ≤ 2× squawk. Run: `deno run -A scripts/bench_lint.ts [--files N] [--runs N]`.
 */

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;
const CONFIG = `${ROOT}deno.json`;

/** Small, varied migrations: safe recipes, hazards, comments, strings, non-ASCII. */
const TEMPLATES: ((i: number) => string)[] = [
  (i) =>
    `-- create the table for feature ${i}\nCREATE TABLE feature_${i} (\n  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n  name text NOT NULL,\n  created_at timestamptz NOT NULL DEFAULT now()\n);\nCREATE INDEX feature_${i}_name_idx ON feature_${i} (name);\n`,
  (i) =>
    `ALTER TABLE users ADD COLUMN flag_${i} boolean NOT NULL DEFAULT false;\nALTER TABLE users ADD COLUMN token_${i} uuid DEFAULT gen_random_uuid();\n`,
  (i) =>
    `-- managed-migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS orders_${i}_idx ON orders (customer_id, created_at);\n`,
  (i) =>
    `ALTER TABLE orders ADD CONSTRAINT orders_${i}_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT orders_${i}_fk;\n`,
  (i) =>
    `/* Kommentar: Größe ändern — café ☕ */\nALTER TABLE "Accounts_${i}" ALTER COLUMN balance TYPE numeric(14,2);\nCOMMENT ON TABLE "Accounts_${i}" IS 'DROP TABLE is not run here';\n`,
  (i) =>
    `CREATE OR REPLACE FUNCTION touch_${i}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  NEW.updated_at := now();\n  RETURN NEW;\nEND\n$$;\nCREATE TRIGGER touch_${i} BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch_${i}();\n`,
  (i) =>
    `ALTER TABLE invoices ADD CONSTRAINT invoices_${i}_amount CHECK (amount >= 0) NOT VALID;\nUPDATE invoices SET amount = 0 WHERE amount IS NULL AND id % 10 = ${
      i % 10
    };\n`,
  (i) =>
    `DO $$ BEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'status_${i}') THEN\n    CREATE TYPE status_${i} AS ENUM ('new', 'done');\n  END IF;\nEND $$;\n`,
  (i) =>
    `ALTER TABLE events RENAME COLUMN payload_${i} TO body_${i};\nDROP INDEX events_${i}_idx;\n`,
  (i) =>
    `INSERT INTO settings (key, value) VALUES ('feature_${i}', '{"enabled": true}'::jsonb)\nON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;\nALTER TABLE users ALTER COLUMN email_${i} SET NOT NULL;\n`,
];

/** Writes `count` migration pairs into a fresh temp db directory and returns the migrations dir. */
export async function generateMigrations(count: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "mm_bench_lint_" });
  const migrations = `${dir}/managed-migrations`;
  await Deno.mkdir(migrations);
  for (let i = 0; i < count; i++) {
    const version = String(202401010000 + i);
    const sql = TEMPLATES[i % TEMPLATES.length](i);
    await Deno.writeTextFile(`${migrations}/${version}_m${i}.up.sql`, sql);
    await Deno.writeTextFile(
      `${migrations}/${version}_m${i}.down.sql`,
      "SELECT 1;\n",
    );
  }
  return migrations;
}

async function timeRun(cmd: string, args: string[]): Promise<number> {
  const start = performance.now();
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const ms = performance.now() - start;
  if (out.code !== 0 && out.code !== 1 && out.code !== 3) {
    throw new Error(
      `${cmd} exited ${out.code}: ${
        new TextDecoder().decode(out.stderr).slice(-500)
      }`,
    );
  }
  return ms;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Installs squawk-cli into a temp dir and returns its native binary (or the npm wrapper). */
async function installSquawk(): Promise<string> {
  const prefix = await Deno.makeTempDir({ prefix: "mm_squawk_" });
  const out = await new Deno.Command("npm", {
    args: [
      "install",
      "--silent",
      "--no-audit",
      "--no-fund",
      "--prefix",
      prefix,
      "squawk-cli",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `Cannot install squawk-cli with npm: ${
        new TextDecoder().decode(out.stderr).slice(-500)
      }`,
    );
  }
  for (
    const candidate of [
      `${prefix}/node_modules/@squawk-cli/linux-x64/bin/squawk`,
      `${prefix}/node_modules/@squawk-cli/linux-arm64/bin/squawk`,
      `${prefix}/node_modules/@squawk-cli/darwin-arm64/bin/squawk`,
      `${prefix}/node_modules/@squawk-cli/darwin-x64/bin/squawk`,
      `${prefix}/node_modules/.bin/squawk`,
    ]
  ) {
    try {
      await Deno.stat(candidate);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `squawk-cli installed in "${prefix}" but no squawk binary was found`,
  );
}

/** Runs the benchmark and prints the figures; returns ours/squawk. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const flag = (name: string, fallback: number) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const count = flag("--files", 1000);
  const runs = flag("--runs", 5);
  const migrations = await generateMigrations(count);
  const upFiles: string[] = [];
  for await (const e of Deno.readDir(migrations)) {
    if (e.name.endsWith(".up.sql")) upFiles.push(`${migrations}/${e.name}`);
  }
  upFiles.sort();
  const squawk = await installSquawk();

  let compiled: string | undefined;
  try {
    await Deno.stat(`${ROOT}dist/managed-migrate`);
    compiled = `${ROOT}dist/managed-migrate`;
  } catch {
    compiled = undefined;
  }
  const ours: [string, string[]] = compiled
    ? [compiled, ["lint", "--format", "json", migrations]]
    : [Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      "--config",
      CONFIG,
      MAIN,
      "lint",
      "--format",
      "json",
      migrations,
    ]];
  const theirs: [string, string[]] = [squawk, [
    "--reporter",
    "json",
    ...upFiles,
  ]];

  // Warm both (module cache, page cache) before timing.
  await timeRun(...ours);
  await timeRun(...theirs);
  const oursMs: number[] = [];
  const theirsMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    oursMs.push(await timeRun(...ours));
    theirsMs.push(await timeRun(...theirs));
  }
  const a = median(oursMs);
  const b = median(theirsMs);
  const ratio = a / b;
  const out = (s: string) =>
    Deno.stdout.writeSync(new TextEncoder().encode(`${s}\n`));
  out(`lint bench: ${count} migration files, median of ${runs} runs`);
  out(
    `  managed-migrate lint (${
      compiled ? "compiled binary" : "deno run main.ts"
    }): ${a.toFixed(0)} ms`,
  );
  out(
    `  squawk ${
      squawk.includes("@squawk-cli") ? "(native binary)" : "(npm wrapper)"
    }: ${b.toFixed(0)} ms`,
  );
  out(
    `  ratio: ${ratio.toFixed(2)}x squawk (target ≤ 2x) ${
      ratio <= 2 ? "OK" : "SLOWER THAN TARGET"
    }`,
  );
  await Deno.remove(migrations.replace(/\/managed-migrations$/, ""), {
    recursive: true,
  });
  return ratio;
}

if (import.meta.main) await main();
