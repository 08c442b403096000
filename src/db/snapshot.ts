/**
 * Schema snapshots for `test`: every fact about the user's schemas that a
 * down migration must restore, read from the catalogs in ONE query (it runs
 * twice per migration, so 300 migrations mean 600 snapshots), one canonical
 * line per fact, sorted. Two snapshots are equal when their lines are.
 *
 * What is compared: schemas, extensions, tables (kind, persistence,
 * partitioning, RLS flags, options), columns (position, type, nullability,
 * default, identity, generated, collation), constraints
 * (`pg_get_constraintdef`), indexes (`pg_get_indexdef`, validity), views and
 * materialized views (`pg_get_viewdef`), sequences (parameters, OWNED BY),
 * functions and procedures (`pg_get_functiondef`), aggregates (signature),
 * triggers (`pg_get_triggerdef`, enabled state), rules, types (enum labels
 * in order, composite attributes, domains, ranges), comments, RLS policies
 * and grants (relations, columns, schemas, routines, types).
 * Not compared: data, owners, default privileges, statistics objects,
 * publications, event triggers, objects that belong to an extension
 * (the extension and its version stand for them), and sequence values
 * (nextval is not transactional).
 */

import type { Sql } from "./connect.ts";

/** A table left out of snapshots (the history tables). */
export interface ExcludedTable {
  schema: string;
  table: string;
}

/** Options of snapshotSchema(). */
export interface SnapshotOptions {
  /** Tables (with their columns, indexes, constraints, triggers…) to leave out. */
  excludeTables?: ExcludedTable[];
}

/** The schema as sorted canonical lines, e.g. `index public.users_email_idx: CREATE INDEX …`. */
export interface SchemaSnapshot {
  lines: string[];
}

/** The history tables of `historySchema`, which snapshots must ignore. */
export function historyTables(historySchema: string): ExcludedTable[] {
  return [
    { schema: historySchema, table: "managed_migrations" },
    { schema: historySchema, table: "seed_history" },
  ];
}

// Multi-line definitions (functions, views) stay exact but on one line.
const ONE_LINE = (expr: string) =>
  `replace(replace(rtrim(${expr}, E' \\n'), E'\\r', ''), E'\\n', ' \\n ')`;

// Sorted aclitem[] as text, so GRANT order does not matter.
const ACL = (expr: string) =>
  `(select string_agg(a::text, ',' order by a::text) from unnest(${expr}) a)`;

/**
 * The catalog query. `$1`: JSON array of `{ schema, table }` to exclude.
 * Schemas: everything but pg_catalog, information_schema, pg_toast*, pg_temp*.
 * Objects that belong to an extension (pg_depend deptype 'e') are left out.
 */
const SNAPSHOT_QUERY = `
with
ns as (
  select n.oid, n.nspname, n.nspacl from pg_namespace n
  where n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp\\_%'
),
ext as (select objid, classid from pg_depend where deptype = 'e'),
excluded as (
  select c.oid from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  join jsonb_to_recordset($1::text::jsonb) as x(schema text, "table" text)
    on x.schema = n.nspname and x."table" = c.relname
),
rels as (
  select c.oid, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
         c.relreplident, c.reloptions, c.relacl, c.relispartition,
         quote_ident(ns.nspname) || '.' || quote_ident(c.relname) as qname
  from pg_class c join ns on ns.oid = c.relnamespace
  where c.oid >= 16384 -- FirstNormalObjectId: user objects only
    and c.oid not in (select oid from excluded)
    and c.relkind <> 't'
    and not exists (select 1 from ext where ext.classid = 'pg_class'::regclass and ext.objid = c.oid)
    and not exists (select 1 from pg_index i where i.indexrelid = c.oid and i.indrelid in (select oid from excluded))
    and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                    and d.deptype in ('a', 'i') and d.refobjid in (select oid from excluded))
),
procs as (
  select p.oid, p.prokind, p.proacl,
         quote_ident(ns.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' as qname
  from pg_proc p join ns on ns.oid = p.pronamespace
  where p.oid >= 16384
    and not exists (select 1 from ext where ext.classid = 'pg_proc'::regclass and ext.objid = p.oid)
),
types as (
  select t.oid, t.typtype, t.typbasetype, t.typtypmod, t.typnotnull, t.typdefault, t.typrelid, t.typacl,
         t.typcollation,
         quote_ident(ns.nspname) || '.' || quote_ident(t.typname) as qname
  from pg_type t join ns on ns.oid = t.typnamespace
  where t.oid >= 16384 and t.typtype in ('e', 'd', 'r', 'c')
    and (t.typtype <> 'c' or (select relkind from pg_class where oid = t.typrelid) = 'c')
    and not exists (select 1 from ext where ext.classid = 'pg_type'::regclass and ext.objid = t.oid)
)
select 'schema ' || quote_ident(nspname) || coalesce(' grants ' || ${
  ACL("nspacl")
}, '') as line from ns
union all
select 'extension ' || quote_ident(e.extname) || ' ' || e.extversion || ' in ' || quote_ident(n.nspname)
  from pg_extension e join pg_namespace n on n.oid = e.extnamespace
union all
select case relkind when 'r' then 'table ' when 'p' then 'table ' when 'f' then 'foreign table '
                    when 'v' then 'view ' when 'm' then 'materialized view ' end
       || qname
       || case when relpersistence = 'u' then ' unlogged' else '' end
       || case when relkind = 'p' then ' partition by ' || pg_get_partkeydef(oid) else '' end
       || case when relispartition then ' partition of ' ||
            coalesce((select i.inhparent::regclass::text from pg_inherits i where i.inhrelid = rels.oid), '?') ||
            ' ' || coalesce(pg_get_expr((select relpartbound from pg_class where oid = rels.oid), oid), '')
          else coalesce(' inherits ' || (select string_agg(i.inhparent::regclass::text, ', ' order by i.inhseqno)
                                          from pg_inherits i where i.inhrelid = rels.oid), '') end
       || case when relrowsecurity then ' row-level-security' else '' end
       || case when relforcerowsecurity then ' force-row-level-security' else '' end
       || case when relreplident not in ('d', 'n') or (relreplident = 'n' and relkind in ('r', 'p'))
               then ' replica-identity ' || relreplident::text else '' end
       || coalesce(' with (' || array_to_string(reloptions, ', ') || ')', '')
       || case when relkind in ('v', 'm') then ': ' || ${
  ONE_LINE("pg_get_viewdef(oid)")
} else '' end
  from rels where relkind in ('r', 'p', 'f', 'v', 'm')
union all
select 'grant on ' || qname || ': ' || ${
  ACL("relacl")
} from rels where relacl is not null and relkind <> 'i' and relkind <> 'I'
union all
select 'sequence ' || r.qname || ' as ' || format_type(s.seqtypid, null)
       || ' start ' || s.seqstart || ' increment ' || s.seqincrement || ' min ' || s.seqmin
       || ' max ' || s.seqmax || ' cache ' || s.seqcache || case when s.seqcycle then ' cycle' else '' end
       || coalesce(' owned by ' || (select d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                                     from pg_depend d join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                                    where d.classid = 'pg_class'::regclass and d.objid = r.oid
                                      and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i') limit 1), '')
  from rels r join pg_sequence s on s.seqrelid = r.oid
union all
select 'column ' || r.qname || '.' || quote_ident(a.attname)
       || ' #' || row_number() over (partition by a.attrelid order by a.attnum)
       || ': ' || format_type(a.atttypid, a.atttypmod)
       || case when a.attnotnull then ' not null' else '' end
       || case when coalesce(to_jsonb(a) ->> 'attgenerated', '') = 's'
               then ' generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
               else coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') end
       || case a.attidentity when 'a' then ' generated always as identity'
                             when 'd' then ' generated by default as identity' else '' end
       || case when a.attcollation <> 0 and a.attcollation <> t.typcollation
               then ' collate ' || (select quote_ident(n.nspname) || '.' || quote_ident(co.collname)
                                      from pg_collation co join pg_namespace n on n.oid = co.collnamespace
                                     where co.oid = a.attcollation) else '' end
       || coalesce(' grants ' || ${ACL("a.attacl")}, '')
  from rels r
  join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped
  join pg_type t on t.oid = a.atttypid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where r.relkind in ('r', 'p', 'f', 'v', 'm')
union all
select 'constraint ' || r.qname || '.' || quote_ident(c.conname) || ': ' || pg_get_constraintdef(c.oid)
  from pg_constraint c join rels r on r.oid = c.conrelid
union all
select 'constraint ' || t.qname || '.' || quote_ident(c.conname) || ': ' || pg_get_constraintdef(c.oid)
  from pg_constraint c join types t on t.oid = c.contypid
union all
select 'index ' || r.qname || ': ' || pg_get_indexdef(r.oid)
       || case when not i.indisvalid then ' (invalid)' else '' end
       || case when i.indisclustered then ' (clustered)' else '' end
       || case when i.indisreplident then ' (replica identity)' else '' end
  from rels r join pg_index i on i.indexrelid = r.oid
union all
select case p.prokind when 'a' then 'aggregate ' || p.qname
                      else case p.prokind when 'p' then 'procedure ' else 'function ' end
                           || p.qname || ': ' || ${
  ONE_LINE("pg_get_functiondef(p.oid)")
} end
  from procs p
union all
select 'grant on routine ' || qname || ': ' || ${
  ACL("proacl")
} from procs where proacl is not null
union all
select 'trigger ' || r.qname || '.' || quote_ident(tg.tgname) || ': ' || pg_get_triggerdef(tg.oid)
       || case when tg.tgenabled <> 'O' then ' (enabled=' || tg.tgenabled::text || ')' else '' end
  from pg_trigger tg join rels r on r.oid = tg.tgrelid
 where not tg.tgisinternal
union all
select 'rule ' || r.qname || '.' || quote_ident(rw.rulename) || ': ' || ${
  ONE_LINE("pg_get_ruledef(rw.oid)")
}
  from pg_rewrite rw join rels r on r.oid = rw.ev_class
 where rw.rulename <> '_RETURN'
union all
select 'type ' || t.qname || ': ' || case t.typtype
         when 'e' then 'enum (' || coalesce((select string_agg(quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
                                       from pg_enum e where e.enumtypid = t.oid), '') || ')'
         when 'd' then 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                       || case when t.typnotnull then ' not null' else '' end
                       || coalesce(' default ' || t.typdefault, '')
         when 'r' then 'range of ' || (select format_type(rg.rngsubtype, null) from pg_range rg where rg.rngtypid = t.oid)
         else 'composite (' || coalesce((select string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)
                                           from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped), '') || ')'
       end
       || coalesce(' grants ' || ${ACL("t.typacl")}, '')
  from types t
union all
select 'policy ' || r.qname || '.' || quote_ident(po.polname) || ': '
       || case when po.polpermissive then 'permissive' else 'restrictive' end
       || ' for ' || case po.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                    when 'd' then 'delete' else 'all' end
       || ' to ' || (select string_agg(case when x = 0 then 'public' else x::regrole::text end, ', ' order by 1)
                       from unnest(po.polroles) x)
       || coalesce(' using (' || pg_get_expr(po.polqual, po.polrelid) || ')', '')
       || coalesce(' with check (' || pg_get_expr(po.polwithcheck, po.polrelid) || ')', '')
  from pg_policy po join rels r on r.oid = po.polrelid
union all
select 'comment on ' || i.type || ' ' || i.identity || ': ' || quote_literal(d.description)
  from pg_description d
  cross join lateral pg_identify_object(d.classoid, d.objoid, d.objsubid) i
 where d.objoid >= 16384
   and (i.schema is null or i.schema in (select nspname from ns))
   and not exists (select 1 from ext where ext.classid = d.classoid and ext.objid = d.objoid)
   and not (d.classoid = 'pg_class'::regclass and d.objoid in (select oid from excluded))
   and not (d.classoid = 'pg_namespace'::regclass and d.objoid not in (select oid from ns))
`;

/**
 * Reads the schema of the connected database as sorted canonical lines, in one
 * catalog query. Runs inside whatever transaction `sql` is in (it sees that
 * transaction's uncommitted DDL); writes nothing.
 */
export async function snapshotSchema(
  sql: Sql,
  options: SnapshotOptions = {},
): Promise<SchemaSnapshot> {
  const excluded = options.excludeTables ?? [];
  // A named prepared statement: planning this query costs as much as running it.
  const rows = await sql.unsafe<{ line: string | null }[]>(
    SNAPSHOT_QUERY,
    [JSON.stringify(excluded)],
    { prepare: true },
  );
  const lines = rows.map((r) => r.line).filter((l): l is string => l !== null);
  // Plain code-unit order: independent of the server's collation.
  lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { lines };
}

/** True when two snapshots hold the same lines. */
export function snapshotsEqual(a: SchemaSnapshot, b: SchemaSnapshot): boolean {
  if (a.lines.length !== b.lines.length) return false;
  return a.lines.every((line, i) => line === b.lines[i]);
}

/**
 * The difference from `before` to `after`: `- line` for a fact that
 * disappeared, `+ line` for one that appeared, ordered by object so that a
 * changed object shows its `-` line right above its `+` line. Empty when equal.
 */
export function diffSnapshots(
  before: SchemaSnapshot,
  after: SchemaSnapshot,
): string[] {
  const count = (lines: string[]) => {
    const map = new Map<string, number>();
    for (const line of lines) map.set(line, (map.get(line) ?? 0) + 1);
    return map;
  };
  const a = count(before.lines);
  const b = count(after.lines);
  const changes: { line: string; sign: "-" | "+" }[] = [];
  for (const [line, n] of a) {
    for (let i = b.get(line) ?? 0; i < n; i++) {
      changes.push({ line, sign: "-" });
    }
  }
  for (const [line, n] of b) {
    for (let i = a.get(line) ?? 0; i < n; i++) {
      changes.push({ line, sign: "+" });
    }
  }
  changes.sort((x, y) =>
    x.line < y.line ? -1 : x.line > y.line ? 1 : x.sign === "-" ? -1 : 1
  );
  return changes.map((c) => `${c.sign} ${c.line}`);
}
