/**
 * The libpg-query wrapper: parses SQL with the real PostgreSQL parser (WASM,
 * loaded once and only when a command lints) and turns the raw parse tree into
 * `Statement` summaries with line and column. Rules read these summaries,
 * never the parser's JSON (kaaveland/eugene `src/lints/ast.rs`).
 */

/** A table (or other relation) as written: schema only when qualified. */
export interface TableRef {
  schema?: string;
  name: string;
}

/** What an `ADD CONSTRAINT` (or an inline column constraint) adds. */
export type ConstraintKind =
  | "check"
  | "foreign-key"
  | "unique"
  | "primary-key"
  | "exclusion"
  | "not-null"
  | "other";

/** One subcommand of an `ALTER TABLE`. */
export type AlterAction =
  | {
    type: "add-column";
    column: string;
    /** Why adding this column rewrites the table (volatile default, serial...), if it does. */
    rewrite?: string;
    /** An inline CHECK: the table is scanned under the lock. */
    inlineCheck: boolean;
    inlineUnique: boolean;
    inlinePrimaryKey: boolean;
    /** REFERENCES with a non-null default: every row is checked. */
    validatingReference: boolean;
    /** Tables named by an inline REFERENCES. */
    references: TableRef[];
  }
  | { type: "drop-column"; column: string }
  | { type: "alter-column-type"; column: string; newType: string }
  | { type: "set-not-null"; column: string }
  | {
    type: "add-constraint";
    kind: ConstraintKind;
    name?: string;
    notValid: boolean;
    /** `UNIQUE USING INDEX` / `PRIMARY KEY USING INDEX`: the index already exists. */
    usingIndex?: string;
    /** For `CHECK (col IS NOT NULL)` and NOT NULL constraints: the column. */
    notNullColumn?: string;
    /** For a foreign key: the referenced table. */
    references?: TableRef;
  }
  | { type: "validate-constraint"; name: string }
  | { type: "other"; subtype: string };

/** Fields every statement summary has. */
export interface StatementBase {
  /** 1-based line of the statement's first token. */
  line: number;
  /** 1-based column (in characters) of the statement's first token. */
  column: number;
  /** The statement's text, from its first token, without the final `;`. */
  text: string;
  /** Where `text` starts in the file, in UTF-16 code units. */
  offset: number;
}

/** A parsed statement, reduced to what the guardrails need. */
export type Statement =
  & StatementBase
  & (
    | { kind: "create-table"; table: TableRef; partitionOf?: TableRef }
    | {
      kind: "alter-table";
      table: TableRef;
      /** `TABLE`, `FOREIGN TABLE`, `INDEX`, `VIEW`... as the parser names it. */
      objectType: string;
      only: boolean;
      ifExists: boolean;
      actions: AlterAction[];
    }
    | {
      kind: "create-index";
      table: TableRef;
      index?: string;
      concurrent: boolean;
      unique: boolean;
      /** `ON ONLY parent`: a partitioned table's index without recursing. */
      only: boolean;
    }
    | {
      kind: "drop";
      objectType: string;
      objects: TableRef[];
      concurrent: boolean;
      ifExists: boolean;
      cascade: boolean;
    }
    | {
      kind: "rename";
      objectType: string;
      table?: TableRef;
      from?: string;
      to: string;
    }
    | { kind: "set-schema"; objectType: string; table?: TableRef; to: string }
    | { kind: "truncate"; tables: TableRef[] }
    | { kind: "drop-database"; name: string }
    | {
      kind: "reindex";
      target: "index" | "table" | "schema" | "database" | "system";
      table?: TableRef;
      name?: string;
      concurrent: boolean;
    }
    | {
      kind: "vacuum";
      full: boolean;
      analyzeOnly: boolean;
      tables: TableRef[];
    }
    | { kind: "cluster"; table?: TableRef }
    | { kind: "do"; language: string }
    | { kind: "call"; name: string }
    | { kind: "execute"; name: string }
    | {
      kind: "create-function";
      name: string;
      procedure: boolean;
      volatility: "immutable" | "stable" | "volatile";
    }
    | { kind: "select"; calls: string[][] }
    | { kind: "dml"; command: string; table: TableRef }
    | { kind: "lock"; tables: TableRef[]; mode: string }
    | { kind: "transaction"; action: string }
    | { kind: "other"; node: string }
  );

/** A parse: the statements, or the first syntax error with its position. */
export type ParseResult =
  | { ok: true; statements: Statement[] }
  | {
    ok: false;
    error: { message: string; line: number; column: number };
  };

type LibPgQuery = typeof import("libpg-query");
type Json = Record<string, unknown>;

let parser: Promise<LibPgQuery> | undefined;

/** Loads the WASM parser once; later calls share the same instance. */
export function loadParser(): Promise<LibPgQuery> {
  parser ??= (async () => {
    const module = await import("libpg-query");
    await module.loadModule();
    return module;
  })();
  return parser;
}

/**
 * The last files parsed: `migrate` lints every pending file, then asks each
 * one's locked tables before running it; the second ask is free.
 */
const recent = new Map<string, ParseResult>();
const RECENT_LIMIT = 2000;

/** Parses `sql` into statement summaries, or returns its syntax error with line and column. */
export async function parseSql(sql: string): Promise<ParseResult> {
  const cached = recent.get(sql);
  if (cached) return cached;
  const result = await parseUncached(sql);
  if (recent.size >= RECENT_LIMIT) recent.clear();
  recent.set(sql, result);
  return result;
}

async function parseUncached(sql: string): Promise<ParseResult> {
  const pg = await loadParser();
  // libpg-query refuses an empty string; whitespace alone parses to nothing.
  if (sql.trim() === "") return { ok: true, statements: [] };
  const source = new SourceText(sql);
  let tree: {
    stmts?: { stmt: Json; stmt_location?: number; stmt_len?: number }[];
  };
  try {
    tree = pg.parseSync(sql) as typeof tree;
  } catch (error) {
    const details =
      (error as { sqlDetails?: { message?: string; cursorPosition?: number } })
        .sqlDetails;
    const message = details?.message ?? (error as Error).message;
    // cursorPosition counts characters (code points) from 0.
    const index = source.indexOfCodePoint(details?.cursorPosition ?? 0);
    return { ok: false, error: { message, ...source.lineColumn(index) } };
  }
  const statements: Statement[] = [];
  for (const raw of tree.stmts ?? []) {
    const startByte = raw.stmt_location ?? 0;
    const start = source.skipTrivia(source.indexOfByte(startByte));
    const end = raw.stmt_len === undefined
      ? sql.length
      : source.indexOfByte(startByte + raw.stmt_len);
    const base: StatementBase = {
      ...source.lineColumn(start),
      text: sql.slice(start, end).replace(/;\s*$/, "").trim(),
      offset: start,
    };
    statements.push({ ...base, ...summarize(raw.stmt) } as Statement);
  }
  return { ok: true, statements };
}

// ---------------------------------------------------------------------------
// Positions: libpg-query reports statement locations in UTF-8 bytes and error
// cursors in code points; JavaScript strings index UTF-16 code units.

class SourceText {
  readonly #text: string;
  readonly #ascii: boolean;
  #byteToIndex?: Int32Array;
  #lineStarts?: number[];

  constructor(text: string) {
    this.#text = text;
    // deno-lint-ignore no-control-regex
    this.#ascii = /^[\x00-\x7f]*$/.test(text);
  }

  indexOfByte(byte: number): number {
    if (this.#ascii) return Math.min(byte, this.#text.length);
    if (!this.#byteToIndex) this.#byteToIndex = this.#buildByteMap();
    const map = this.#byteToIndex;
    return map[Math.min(Math.max(byte, 0), map.length - 1)];
  }

  indexOfCodePoint(codePoint: number): number {
    if (this.#ascii) return Math.min(codePoint, this.#text.length);
    let index = 0;
    for (let n = 0; n < codePoint && index < this.#text.length; n++) {
      index += (this.#text.codePointAt(index) ?? 0) > 0xffff ? 2 : 1;
    }
    return index;
  }

  /** Moves past whitespace and comments to the statement's first token. */
  skipTrivia(index: number): number {
    const text = this.#text;
    let i = index;
    while (i < text.length) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f") {
        i++;
      } else if (c === "-" && text[i + 1] === "-") {
        const nl = text.indexOf("\n", i);
        i = nl === -1 ? text.length : nl + 1;
      } else if (c === "/" && text[i + 1] === "*") {
        // Block comments nest in PostgreSQL.
        let depth = 1;
        i += 2;
        while (i < text.length && depth > 0) {
          if (text[i] === "/" && text[i + 1] === "*") {
            depth++;
            i += 2;
          } else if (text[i] === "*" && text[i + 1] === "/") {
            depth--;
            i += 2;
          } else i++;
        }
      } else break;
    }
    return i;
  }

  /** 1-based line and column (in code points) of a UTF-16 index. */
  lineColumn(index: number): { line: number; column: number } {
    if (!this.#lineStarts) {
      const starts = [0];
      for (let i = 0; i < this.#text.length; i++) {
        if (this.#text.charCodeAt(i) === 10) starts.push(i + 1);
      }
      this.#lineStarts = starts;
    }
    const starts = this.#lineStarts;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    const lineText = this.#text.slice(starts[lo], index);
    let column = 1;
    for (const _ of lineText) column++;
    return { line: lo + 1, column };
  }

  #buildByteMap(): Int32Array {
    const text = this.#text;
    const bytes: number[] = [];
    for (let i = 0; i < text.length;) {
      const cp = text.codePointAt(i)!;
      const units = cp > 0xffff ? 2 : 1;
      const length = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      for (let b = 0; b < length; b++) bytes.push(i);
      i += units;
    }
    bytes.push(text.length);
    return Int32Array.from(bytes);
  }
}

// ---------------------------------------------------------------------------
// Summaries

function summarize(node: Json): Record<string, unknown> {
  const [type, body] = Object.entries(node)[0] as [string, Json];
  switch (type) {
    case "CreateStmt": {
      const parent = (body.inhRelations as Json[] | undefined)?.[0];
      return {
        kind: "create-table",
        table: rangeVar(body.relation as Json),
        partitionOf: body.partbound && parent
          ? rangeVar(parent.RangeVar as Json)
          : undefined,
      };
    }
    case "CreateTableAsStmt": {
      // CREATE TABLE AS and CREATE MATERIALIZED VIEW: a new relation either way.
      const into = body.into as Json;
      return { kind: "create-table", table: rangeVar(into.rel as Json) };
    }
    case "SelectStmt": {
      const into = body.intoClause as Json | undefined;
      if (into) {
        return { kind: "create-table", table: rangeVar(into.rel as Json) };
      }
      const calls: string[][] = [];
      collectCalls(body, calls);
      return { kind: "select", calls };
    }
    case "AlterTableStmt":
      return {
        kind: "alter-table",
        table: rangeVar(body.relation as Json),
        objectType: objectType(body.objtype),
        only: (body.relation as Json).inh !== true,
        ifExists: body.missing_ok === true,
        actions: ((body.cmds as Json[] | undefined) ?? []).map((c) =>
          alterAction(c.AlterTableCmd as Json)
        ),
      };
    case "IndexStmt":
      return {
        kind: "create-index",
        table: rangeVar(body.relation as Json),
        index: body.idxname as string | undefined,
        concurrent: body.concurrent === true,
        unique: body.unique === true,
        only: (body.relation as Json).inh !== true,
      };
    case "DropStmt": {
      const type = objectType(body.removeType);
      return {
        kind: "drop",
        objectType: type,
        objects: ((body.objects as Json[] | undefined) ?? []).map(objectName),
        concurrent: body.concurrent === true,
        ifExists: body.missing_ok === true,
        cascade: body.behavior === "DROP_CASCADE",
      };
    }
    case "RenameStmt": {
      const renameType = objectType(body.renameType);
      const relation = body.relation as Json | undefined;
      return {
        kind: "rename",
        objectType: renameType,
        table: relation ? rangeVar(relation) : undefined,
        from: (body.subname as string | undefined) ??
          (relation?.relname as string | undefined),
        to: body.newname as string,
      };
    }
    case "AlterObjectSchemaStmt": {
      const relation = body.relation as Json | undefined;
      return {
        kind: "set-schema",
        objectType: objectType(body.objectType),
        table: relation ? rangeVar(relation) : undefined,
        to: body.newschema as string,
      };
    }
    case "TruncateStmt":
      return {
        kind: "truncate",
        tables: ((body.relations as Json[] | undefined) ?? []).map((r) =>
          rangeVar(r.RangeVar as Json)
        ),
      };
    case "DropdbStmt":
      return { kind: "drop-database", name: body.dbname as string };
    case "ReindexStmt": {
      const kind = String(body.kind).replace("REINDEX_OBJECT_", "")
        .toLowerCase();
      const relation = body.relation as Json | undefined;
      return {
        kind: "reindex",
        target: kind,
        table: relation ? rangeVar(relation) : undefined,
        name: body.name as string | undefined,
        concurrent: optionSet(body.params, "concurrently"),
      };
    }
    case "VacuumStmt":
      return {
        kind: "vacuum",
        full: optionSet(body.options, "full"),
        analyzeOnly: body.is_vacuumcmd !== true,
        tables: ((body.rels as Json[] | undefined) ?? []).map((r) =>
          rangeVar((r.VacuumRelation as Json).relation as Json)
        ),
      };
    case "ClusterStmt": {
      const relation = body.relation as Json | undefined;
      return {
        kind: "cluster",
        table: relation ? rangeVar(relation) : undefined,
      };
    }
    case "DoStmt": {
      const language = ((body.args as Json[] | undefined) ?? [])
        .map((a) => a.DefElem as Json)
        .find((d) => d.defname === "language");
      return {
        kind: "do",
        language: language ? stringValue(language.arg as Json) : "plpgsql",
      };
    }
    case "CallStmt": {
      const call = body.funccall as Json;
      return { kind: "call", name: names(call.funcname).join(".") };
    }
    case "ExecuteStmt":
      return { kind: "execute", name: body.name as string };
    case "CreateFunctionStmt": {
      const options = ((body.options as Json[] | undefined) ?? []).map((o) =>
        o.DefElem as Json
      );
      const volatility = options.find((d) => d.defname === "volatility");
      return {
        kind: "create-function",
        name: names(body.funcname).join("."),
        procedure: body.is_procedure === true,
        volatility: volatility
          ? stringValue(volatility.arg as Json)
          : "volatile",
      };
    }
    case "InsertStmt":
    case "UpdateStmt":
    case "DeleteStmt":
    case "MergeStmt":
      return {
        kind: "dml",
        command: type.replace("Stmt", "").toUpperCase(),
        table: rangeVar(body.relation as Json),
      };
    case "LockStmt":
      return {
        kind: "lock",
        tables: ((body.relations as Json[] | undefined) ?? []).map((r) =>
          rangeVar(r.RangeVar as Json)
        ),
        mode: LOCK_MODES[(body.mode as number) ?? 8] ?? "AccessExclusiveLock",
      };
    case "TransactionStmt":
      return {
        kind: "transaction",
        action: String(body.kind).replace("TRANS_STMT_", "").toLowerCase(),
      };
    default:
      return other(type);
  }
}

/** Lock modes by their number in `LockStmt.mode` (lockdefs.h). */
const LOCK_MODES: Record<number, string> = {
  1: "AccessShareLock",
  2: "RowShareLock",
  3: "RowExclusiveLock",
  4: "ShareUpdateExclusiveLock",
  5: "ShareLock",
  6: "ShareRowExclusiveLock",
  7: "ExclusiveLock",
  8: "AccessExclusiveLock",
};

function other(node: string) {
  return { kind: "other", node };
}

function alterAction(cmd: Json): AlterAction {
  const subtype = String(cmd.subtype);
  const column = cmd.name as string;
  switch (subtype) {
    case "AT_AddColumn":
      return addColumn(((cmd.def as Json).ColumnDef) as Json);
    case "AT_DropColumn":
      return { type: "drop-column", column };
    case "AT_AlterColumnType": {
      const def = (cmd.def as Json).ColumnDef as Json;
      return {
        type: "alter-column-type",
        column,
        newType: typeName(def.typeName as Json),
      };
    }
    case "AT_SetNotNull":
      return { type: "set-not-null", column };
    case "AT_AddConstraint":
      return addConstraint((cmd.def as Json).Constraint as Json);
    case "AT_ValidateConstraint":
      return { type: "validate-constraint", name: column };
    default:
      return { type: "other", subtype };
  }
}

const SERIAL_TYPES = new Set([
  "serial",
  "serial2",
  "serial4",
  "serial8",
  "smallserial",
  "bigserial",
]);

function addColumn(def: Json): AlterAction {
  const column = def.colname as string;
  const type = names((def.typeName as Json).names);
  const constraints = ((def.constraints as Json[] | undefined) ?? []).map((c) =>
    c.Constraint as Json
  );
  let rewrite: string | undefined;
  let inlineCheck = false;
  let inlineUnique = false;
  let inlinePrimaryKey = false;
  let hasDefault = false;
  let references: TableRef[] = [];
  if (SERIAL_TYPES.has(type[type.length - 1])) {
    rewrite = `its type ${
      type[type.length - 1]
    } fills every row from a sequence`;
  }
  for (const c of constraints) {
    switch (c.contype) {
      case "CONSTR_DEFAULT": {
        const expr = c.raw_expr as Json;
        if (!isNullConstant(expr)) hasDefault = true;
        const volatileCall = findVolatileCall(expr);
        if (volatileCall) {
          rewrite = `its default calls the volatile function ${volatileCall}()`;
        }
        break;
      }
      case "CONSTR_IDENTITY":
        rewrite = "an identity column fills every row from a sequence";
        break;
      case "CONSTR_GENERATED":
        // PostgreSQL 18 virtual generated columns are computed on read.
        if (c.generated_kind !== "v") {
          rewrite = "a stored generated column is computed for every row";
        }
        break;
      case "CONSTR_CHECK":
        inlineCheck = true;
        break;
      case "CONSTR_UNIQUE":
        inlineUnique = true;
        break;
      case "CONSTR_PRIMARY":
        inlinePrimaryKey = true;
        break;
      case "CONSTR_FOREIGN":
        references = [...references, rangeVar(c.pktable as Json)];
        break;
    }
  }
  return {
    type: "add-column",
    column,
    rewrite,
    inlineCheck,
    inlineUnique,
    inlinePrimaryKey,
    validatingReference: references.length > 0 && hasDefault,
    references,
  };
}

function addConstraint(c: Json): AlterAction {
  const kinds: Record<string, ConstraintKind> = {
    CONSTR_CHECK: "check",
    CONSTR_FOREIGN: "foreign-key",
    CONSTR_UNIQUE: "unique",
    CONSTR_PRIMARY: "primary-key",
    CONSTR_EXCLUSION: "exclusion",
    CONSTR_NOTNULL: "not-null",
  };
  const kind = kinds[String(c.contype)] ?? "other";
  let notNullColumn: string | undefined;
  if (kind === "check") notNullColumn = isNotNullTest(c.raw_expr as Json);
  if (kind === "not-null") notNullColumn = names(c.keys)[0];
  return {
    type: "add-constraint",
    kind,
    name: c.conname as string | undefined,
    notValid: c.skip_validation === true,
    usingIndex: c.indexname as string | undefined,
    notNullColumn,
    references: c.pktable ? rangeVar(c.pktable as Json) : undefined,
  };
}

/** `col IS NOT NULL` → "col". */
function isNotNullTest(expr: Json | undefined): string | undefined {
  const test = expr?.NullTest as Json | undefined;
  if (!test || test.nulltesttype !== "IS_NOT_NULL") return undefined;
  const ref = (test.arg as Json | undefined)?.ColumnRef as Json | undefined;
  const fields = names(ref?.fields);
  return fields.length > 0 ? fields[fields.length - 1] : undefined;
}

function isNullConstant(expr: Json | undefined): boolean {
  if (!expr) return true;
  const constant = expr.A_Const as Json | undefined;
  if (constant) return constant.isnull === true;
  const cast = expr.TypeCast as Json | undefined;
  return cast ? isNullConstant(cast.arg as Json) : false;
}

/** The first volatile function called anywhere in an expression, if any. */
function findVolatileCall(expr: Json | undefined): string | undefined {
  if (!expr) return undefined;
  const calls: string[][] = [];
  collectCalls(expr, calls);
  for (const call of calls) {
    const name = call[call.length - 1];
    if (isVolatile(name)) return call.join(".");
  }
  return undefined;
}

let volatileSet: ReadonlySet<string> | undefined;
let builtinSet: ReadonlySet<string> | undefined;

/** Catalog sets, loaded on first use (they are large strings). */
export async function loadCatalog(): Promise<void> {
  if (volatileSet) return;
  const catalog = await import("./catalog.ts");
  volatileSet = catalog.VOLATILE_FUNCTIONS;
  builtinSet = catalog.BUILTIN_FUNCTIONS;
}

/** True for a volatile catalog or well-known extension function. */
export function isVolatile(name: string): boolean {
  return volatileSet?.has(name.toLowerCase()) ?? false;
}

/** True for a function of the PostgreSQL catalog or of a common extension. */
export function isBuiltin(call: string[]): boolean {
  if (call.length > 1 && call[0] !== "pg_catalog") return false;
  return builtinSet?.has(call[call.length - 1].toLowerCase()) ?? false;
}

/** Collects the names of every function call in a subtree. */
function collectCalls(node: unknown, out: string[][]): void {
  if (Array.isArray(node)) {
    for (const item of node) collectCalls(item, out);
    return;
  }
  if (node === null || typeof node !== "object") return;
  for (const [key, value] of Object.entries(node)) {
    if (key === "FuncCall") {
      out.push(names((value as Json).funcname));
    }
    collectCalls(value, out);
  }
}

function optionSet(list: unknown, name: string): boolean {
  for (const item of (list as Json[] | undefined) ?? []) {
    const def = item.DefElem as Json | undefined;
    if (!def || def.defname !== name) continue;
    const arg = def.arg as Json | undefined;
    if (!arg) return true;
    const value = stringValue(arg).toLowerCase();
    return !["false", "off", "0", "no"].includes(value);
  }
  return false;
}

function stringValue(node: Json | undefined): string {
  if (!node) return "";
  const s = node.String as Json | undefined;
  if (s) return String(s.sval ?? "");
  const i = node.Integer as Json | undefined;
  if (i) return String(i.ival ?? 0);
  const b = node.Boolean as Json | undefined;
  if (b) return b.boolval === true ? "true" : "false";
  return "";
}

function names(list: unknown): string[] {
  return ((list as Json[] | undefined) ?? []).map((n) => stringValue(n));
}

/** Internal names of the types the grammar rewrites, back to their SQL spelling. */
const TYPE_NAMES: Record<string, string> = {
  int2: "smallint",
  int4: "integer",
  int8: "bigint",
  float4: "real",
  float8: "double precision",
  bool: "boolean",
  bpchar: "char",
  varchar: "varchar",
  timestamptz: "timestamptz",
};

function typeName(node: Json): string {
  const parts = names(node.names).filter((p) => p !== "pg_catalog");
  const base = parts.map((p) => TYPE_NAMES[p] ?? p).join(".");
  const mods = ((node.typmods as Json[] | undefined) ?? []).map((m) => {
    const c = m.A_Const as Json | undefined;
    return c ? stringValue({ Integer: c.ival as Json }) : "";
  }).filter((m) => m !== "");
  const array = node.arrayBounds ? "[]" : "";
  return `${base}${mods.length > 0 ? `(${mods.join(",")})` : ""}${array}`;
}

function rangeVar(node: Json): TableRef {
  const ref: TableRef = { name: node.relname as string };
  if (node.schemaname) ref.schema = node.schemaname as string;
  return ref;
}

function objectName(node: Json): TableRef {
  const parts = node.List
    ? names((node.List as Json).items)
    : [stringValue(node)];
  const ref: TableRef = { name: parts[parts.length - 1] };
  if (parts.length > 1) ref.schema = parts[parts.length - 2];
  return ref;
}

function objectType(value: unknown): string {
  return String(value ?? "").replace(/^OBJECT_/, "").replace(/_/g, " ")
    .toLowerCase();
}

/** `schema.table` as written (identifiers unquoted), for messages. */
export function tableName(ref: TableRef): string {
  return ref.schema ? `${ref.schema}.${ref.name}` : ref.name;
}
