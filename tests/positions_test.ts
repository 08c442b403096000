import assert from "node:assert/strict";
import { errorLocation, lineColumn } from "../src/engine/positions.ts";

Deno.test("lineColumn() turns an offset into 1-based line and column", () => {
  assert.deepEqual(lineColumn("ab\ncd", 0), { line: 1, column: 1 });
  assert.deepEqual(lineColumn("ab\ncd", 4), { line: 2, column: 2 });
});

Deno.test("errorLocation() counts the server's position in code points, from the query's offset", () => {
  // "😀" is one character for PostgreSQL but two UTF-16 units in JavaScript.
  const file = "-- 😀 note\nSELECT nope;\n";
  const pos = Array.from("-- 😀 note\nSELECT ").length + 1;
  assert.deepEqual(errorLocation(file, 0, String(pos)), { line: 2, column: 8 });
  const offset = file.indexOf("SELECT");
  assert.deepEqual(errorLocation(file, offset, "8"), { line: 2, column: 8 });
  assert.equal(errorLocation(file, 0, undefined), undefined);
});
