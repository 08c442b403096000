/** Maps server error positions into files (golang-migrate `computeLineFromPos`). */

/** 1-based line and column of a 0-based character offset in `text`. */
export function lineColumn(
  text: string,
  offset: number,
): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split("\n");
  return { line: lines.length, column: lines[lines.length - 1].length + 1 };
}

/**
 * Where a server error points in a file: PostgreSQL's `position` is 1-based,
 * in characters (code points, not UTF-16 units), relative to the query string
 * that was sent, which starts at `queryOffset` (UTF-16) in the file.
 */
export function errorLocation(
  fileText: string,
  queryOffset: number,
  position: string | number | undefined,
): { line: number; column: number } | undefined {
  const pos = Number(position);
  if (!Number.isFinite(pos) || pos < 1) return undefined;
  const sent = fileText.slice(queryOffset);
  const prefix = Array.from(sent).slice(0, pos - 1).join("");
  return lineColumn(fileText, queryOffset + prefix.length);
}
