-- Functions of the exposed schemas ($1 text[]) callable over RPC: named input
-- arguments, how many have defaults, the return shape, and the result columns
-- (of a composite return type or of RETURNS TABLE / OUT parameters).
SELECT n.nspname AS schema,
       p.proname AS name,
       coalesce((
           SELECT array_agg(coalesce(p.proargnames[k], '') ORDER BY k)
             FROM generate_series(1, coalesce(array_length(p.proargtypes::oid[], 1), 0)) k), '{}') AS arg_names,
       coalesce((
           SELECT array_agg(format_type(t, NULL) ORDER BY o)
             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(t, o)), '{}') AS arg_types,
       p.pronargdefaults AS n_defaults,
       p.proretset AS returns_set,
       -- As PostgREST: TABLE, OUT or INOUT parameters make the result rows of named
       -- columns (a one-column RETURNS TABLE answers [{"x": 1}], not [1]).
       NOT EXISTS (SELECT 1 FROM pg_type rt WHERE rt.oid = p.prorettype AND rt.typtype = 'c')
           AND p.prorettype <> 'record'::regtype
           AND NOT coalesce(p.proargmodes::text[] && '{t,b,o}', false) AS returns_scalar,
       p.provolatile::"char" AS volatility,
       p.prorettype = 'void'::regtype AS returns_void,
       coalesce(
           (SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
              FROM pg_type rt JOIN pg_attribute a ON a.attrelid = rt.typrelid
             WHERE rt.oid = p.prorettype AND rt.typrelid <> 0 AND a.attnum > 0 AND NOT a.attisdropped),
           (SELECT json_agg(json_build_object('name', m.name, 'type', format_type(m.t, NULL)) ORDER BY m.o)
              FROM unnest(p.proallargtypes, p.proargmodes::text[], p.proargnames) WITH ORDINALITY AS m(t, mode, name, o)
             WHERE m.mode IN ('t', 'o', 'b')),
           '[]') AS result_columns,
       p.provariadic <> 0 AS variadic,
       (SELECT ARRAY[rn.nspname::text, rc.relname::text]
          FROM pg_type rt JOIN pg_class rc ON rc.oid = rt.typrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE rt.oid = p.prorettype AND rc.relkind IN ('r', 'v', 'm', 'p', 'f')) AS returns_relation,
       -- `ROWS 1` on a set-returning function: a computed relationship to one row.
       p.proretset AND p.prorows = 1 AS rows_one,
       -- A single value of a domain named after a media type (`"application/octet-stream"`,
       -- `"*/*"`): the function answers that media type (PostgREST's handlers).
       (SELECT rt.typname::text FROM pg_type rt
         WHERE rt.oid = p.prorettype AND rt.typtype = 'd' AND strpos(rt.typname, '/') > 0 AND NOT p.proretset) AS media,
       -- That domain is over bytea (directly, or through one more domain).
       coalesce((SELECT b.oid = 'bytea'::regtype OR b.typbasetype = 'bytea'::regtype
                   FROM pg_type rt JOIN pg_type b ON b.oid = rt.typbasetype
                  WHERE rt.oid = p.prorettype AND rt.typtype = 'd'), false) AS media_bytea
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY ($1)
   AND p.prokind = 'f'
 ORDER BY n.nspname, p.proname, p.oid
