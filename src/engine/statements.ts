/**
 * Splits a file into statements with the real parser (libpg-query, loaded
 * lazily), for no-transaction migrations: PostgreSQL runs a multi-statement
 * query string as one implicit transaction, where CREATE INDEX CONCURRENTLY
 * is refused, so each statement must be sent on its own.
 */

import { DatabaseError } from "../errors.ts";
import { lineColumn } from "./positions.ts";

/** One statement of a file and where it starts (in characters). */
export interface StatementText {
  sql: string;
  /** Offset of `sql` in the file's text, in UTF-16 code units. */
  offset: number;
}

/** Splits `text` into statements; comment-only input gives none. Throws DatabaseError on a syntax error. */
export async function splitStatements(
  text: string,
  file: string,
): Promise<StatementText[]> {
  const { parse } = await import("libpg-query");
  let tree: { stmts?: { stmt_location?: number; stmt_len?: number }[] };
  try {
    tree = await parse(text);
  } catch (error) {
    const e = error as {
      message?: string;
      sqlDetails?: { cursorPosition?: number };
    };
    const pos = e.sqlDetails?.cursorPosition;
    const where = pos !== undefined ? lineColumn(text, pos) : undefined;
    throw new DatabaseError(
      `Syntax error in "${file}"${
        where ? `:${where.line}:${where.column}` : ""
      }: ${e.message}`,
      { file, line: where?.line, column: where?.column },
    );
  }
  const bytes = new TextEncoder().encode(text);
  const decoder = new TextDecoder();
  const out: StatementText[] = [];
  for (const s of tree.stmts ?? []) {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const sql = decoder.decode(bytes.subarray(start, end));
    const offset = decoder.decode(bytes.subarray(0, start)).length;
    out.push({ sql, offset });
  }
  return out;
}
