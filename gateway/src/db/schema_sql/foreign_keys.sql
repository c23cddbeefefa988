-- Foreign keys for resource embedding: constraint name, referencing table and
-- columns, referenced table and columns, and whether the referencing columns are
-- unique (a one-to-one relationship). All schemas but the system ones: a key
-- between hidden tables still relates the views over them in the exposed schemas
-- ($1 text[], used to keep only keys whose tables could matter: see the view map).
-- Partitions are skipped (their parent carries the key).
SELECT c.conname::text,
       ns1.nspname::text, t1.relname::text,
       array_agg(a1.attname::text ORDER BY k.ord),
       ns2.nspname::text, t2.relname::text,
       array_agg(a2.attname::text ORDER BY k.ord),
       EXISTS (SELECT 1 FROM pg_index i
                WHERE i.indrelid = c.conrelid AND i.indisunique AND i.indpred IS NULL
                  AND string_to_array(i.indkey::text, ' ')::int2[] <@ c.conkey) AS is_unique
  FROM pg_constraint c
  JOIN pg_class t1 ON t1.oid = c.conrelid
  JOIN pg_namespace ns1 ON ns1.oid = t1.relnamespace
  JOIN pg_class t2 ON t2.oid = c.confrelid
  JOIN pg_namespace ns2 ON ns2.oid = t2.relnamespace
  CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(a, b, ord)
  JOIN pg_attribute a1 ON a1.attrelid = c.conrelid AND a1.attnum = k.a
  JOIN pg_attribute a2 ON a2.attrelid = c.confrelid AND a2.attnum = k.b
 WHERE c.contype = 'f' AND NOT t1.relispartition AND $1::text[] IS NOT NULL
   AND ns1.nspname NOT IN ('pg_catalog', 'information_schema')
 GROUP BY c.oid, c.conname, ns1.nspname, t1.relname, ns2.nspname, t2.relname
 ORDER BY c.conname
