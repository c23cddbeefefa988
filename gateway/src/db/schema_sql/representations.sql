-- Data representations (PostgREST): implicit casts by function between a domain
-- and json or text. domain -> json formats a column's value in responses;
-- text -> domain parses a filter's value; json -> domain parses a written value.
-- Keyed by format_type, as columns' types are.
SELECT format_type(c.castsource, NULL) AS source,
       format_type(c.casttarget, NULL) AS target,
       quote_ident(n.nspname) || '.' || quote_ident(p.proname) AS func,
       s.typtype = 'd' AS from_domain
  FROM pg_catalog.pg_cast c
  JOIN pg_catalog.pg_type s ON s.oid = c.castsource
  JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
  JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE c.castcontext = 'i'
   AND c.castmethod = 'f'
   AND has_function_privilege(c.castfunc, 'execute')
   AND ((s.typtype = 'd' AND c.casttarget IN ('json'::regtype, 'text'::regtype))
     OR (t.typtype = 'd' AND c.castsource IN ('json'::regtype, 'text'::regtype)))
