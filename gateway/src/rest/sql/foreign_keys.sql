-- Foreign keys touching the exposed schemas ($1 text[]), for resource embedding:
-- constraint name, referencing table and columns, referenced table and columns.
SELECT c.conname::text,
       ns1.nspname::text, t1.relname::text,
       array_agg(a1.attname::text ORDER BY k.ord),
       ns2.nspname::text, t2.relname::text,
       array_agg(a2.attname::text ORDER BY k.ord)
  FROM pg_constraint c
  JOIN pg_class t1 ON t1.oid = c.conrelid
  JOIN pg_namespace ns1 ON ns1.oid = t1.relnamespace
  JOIN pg_class t2 ON t2.oid = c.confrelid
  JOIN pg_namespace ns2 ON ns2.oid = t2.relnamespace
  CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(a, b, ord)
  JOIN pg_attribute a1 ON a1.attrelid = c.conrelid AND a1.attnum = k.a
  JOIN pg_attribute a2 ON a2.attrelid = c.confrelid AND a2.attnum = k.b
 WHERE c.contype = 'f' AND (ns1.nspname = ANY ($1) OR ns2.nspname = ANY ($1))
 GROUP BY c.oid, c.conname, ns1.nspname, t1.relname, ns2.nspname, t2.relname
 ORDER BY c.conname
