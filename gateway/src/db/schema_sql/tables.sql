-- Tables, views and materialized views of the exposed schemas ($1 text[]), with
-- columns (as JSON) and primary keys. Only relations some role can see are useful,
-- but privileges are left to Postgres at request time.
SELECT n.nspname AS schema,
       c.relname AS name,
       c.relkind IN ('v', 'm') AS is_view,
       coalesce((
           SELECT json_agg(json_build_object(
                      'name', a.attname,
                      'type', format_type(a.atttypid, a.atttypmod),
                      -- A type whose cast from text reads a value exactly as the record
                      -- conversion's input-function call does: a base or enum type (not
                      -- a domain, composite, array or json), with no cast function from
                      -- text (regclass(text) only looks names up), and either no
                      -- modifier or one the input does not read by (`interval year`
                      -- reads '5' as years; length and precision are applied alike).
                      -- Its qualified name, to cast to without a modifier (format_type's
                      -- `character` would mean char(1)).
                      'scalar', (SELECT quote_ident(tn.nspname) || '.' || quote_ident(t.typname)
                                   FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
                                  WHERE t.oid = a.atttypid AND t.typtype IN ('b', 'e')
                                    AND t.typcategory <> 'A' AND t.oid <> 'json'::regtype
                                    AND (a.atttypmod = -1 OR t.oid IN ('bpchar'::regtype, 'varchar'::regtype,
                                         'numeric'::regtype, 'bit'::regtype, 'varbit'::regtype, 'timestamp'::regtype,
                                         'timestamptz'::regtype, 'time'::regtype, 'timetz'::regtype))
                                    AND NOT EXISTS (SELECT FROM pg_cast k WHERE k.castsource = 'text'::regtype
                                                       AND k.casttarget = t.oid AND k.castmethod = 'f')),
                      'nullable', NOT a.attnotnull,
                      'has_default', a.atthasdef OR a.attidentity <> '',
                      'generated', a.attgenerated <> '',
                      'default', CASE
                          WHEN a.attidentity <> '' THEN format('nextval(%L::regclass)',
                              pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname))
                          WHEN a.atthasdef AND a.attgenerated = '' THEN
                              (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                                WHERE d.adrelid = c.oid AND d.adnum = a.attnum)
                          -- A domain's own default (what an INSERT without the column uses).
                          ELSE (SELECT pg_get_expr(t.typdefaultbin, 0) FROM pg_type t
                                 WHERE t.oid = a.atttypid AND t.typtype = 'd' AND t.typdefaultbin IS NOT NULL)
                      END) ORDER BY a.attnum)
             FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]') AS columns,
       coalesce((
           SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
             FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key,
       -- Which writes the relation takes (bits 4 UPDATE, 8 INSERT, 16 DELETE), views
       -- included: for OPTIONS' Allow header.
       pg_relation_is_updatable(c.oid::regclass, true) AS writable,
       -- A plain table (not partitioned: its partitions' triggers fire) with no
       -- triggers of its own and no rules: its writes run no code that could set
       -- response.headers / response.status.
       c.relkind = 'r' AND NOT c.relhasrules
         AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS quiet
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY ($1)
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
