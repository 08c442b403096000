/**
 * Opaque code (warning): DO blocks, CALL, EXECUTE and calls of functions the
 * linter cannot see into run statements no rule can check. Creating a
 * function is not a finding: its body does not run at migration time.
 */

import { isBuiltin } from "./parse.ts";
import type { Rule } from "./rule.ts";

/** The opaque-code rules of SPEC §6. */
export const OPAQUE_RULES: Rule[] = [
  {
    id: "dynamic-sql",
    family: "opaque",
    severity: "warning",
    allowBreaking: true,
    message:
      "This runs code the guardrails cannot analyse (a DO block, a procedure or a function)",
    help:
      "Write the statements as plain SQL in the migration so they are checked, or review the code by hand and mark the file `-- managed-migrate: allow=dynamic-sql`",
    rationale:
      "A DO block, CALL, EXECUTE, or a SELECT of a user-defined function runs statements chosen at run time: a DROP or a locking ALTER inside them passes every rule. Function and procedure definitions are fine; calling them is what runs their body.",
    bad:
      "DO $$ BEGIN EXECUTE 'ALTER TABLE ' || 'users' || ' DROP COLUMN x'; END $$;",
    good:
      "CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;",
    check(stmt, ctx) {
      switch (stmt.kind) {
        case "do":
          return [
            `A DO block (${stmt.language}) runs code the guardrails cannot analyse`,
          ];
        case "call":
          return [
            `CALL ${stmt.name}() runs a procedure the guardrails cannot analyse`,
          ];
        case "execute":
          return [
            `EXECUTE ${stmt.name} runs a prepared statement the guardrails cannot analyse`,
          ];
        case "select": {
          const opaque = stmt.calls.filter((c) =>
            ctx.isLocalFunction(c) || !isBuiltin(c)
          ).map((c) => c.join("."));
          const unique = [...new Set(opaque)];
          if (unique.length === 0) return [];
          return [
            `SELECT calls ${
              unique.map((n) => `${n}()`).join(", ")
            }, code the guardrails cannot analyse`,
          ];
        }
        default:
          return [];
      }
    },
  },
];
