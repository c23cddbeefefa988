-- View columns that are plain references to base-table columns, for resource
-- embedding through views (PostgREST infers a view's relationships from the
-- primary and foreign keys of the tables beneath it).
--
-- Parameter: $1 text[] = the exposed schemas.
-- Output, one row per view column that resolves to a base-table column:
--   view_schema, view_name, view_column, base_schema, base_table, base_column
--   (all text), ordered by view_schema, view_name, view column number.
-- Views are plain ('v') and materialized ('m') views in the exposed schemas.
-- The base is an ordinary ('r') or partitioned ('p') table in ANY schema, so a
-- view in `ordering` over a table in `test` (or in a hidden schema) resolves.
--
-- How it works
--   The parser already records where each output column of a view's query comes
--   from: every target entry of the query has `resorigtbl` (the oid of the
--   relation) and `resorigcol` (its column number). They are set only when the
--   entry is a bare column reference (a Var). References through joins, FROM
--   subqueries and CTEs are followed to the relation inside; anything else (an
--   expression, a cast, a function call, a constant, an aggregate) gets 0.
--   The query is stored as the node-tree text of the view's `_RETURN` rule
--   (pg_rewrite.ev_action), the same source PostgREST's "view key dependencies"
--   query uses. The rule keeps views it selects from unexpanded, so a column of a
--   view over a view points at the inner view; we follow those links recursively.
--
--   1. needed_views: the views in the exposed schemas plus, transitively, every
--      view (in any schema) their rules depend on (pg_depend), so only the rules
--      we can use get parsed, and views over views in hidden schemas still resolve.
--   2. pieces / depths / direct_refs: escaped characters are removed from the rule
--      text (`\\` first, then `\{` and `\}`: braces inside names), so every
--      remaining `{` opens a node and every `}` closes one. The text is cut at each
--      `{` (string_to_array, no regular expressions: this is the hot path), and a
--      running sum of the `}` per piece gives the nesting depth. The view's own
--      query is the node at depth 1, so its target entries are the nodes at depth
--      2; subqueries (in FROM, in WHERE/HAVING sublinks, in the select list, in
--      CTEs, the branches of a UNION) sit deeper and are ignored, which matters:
--      their entries carry resorigtbl values of their own. A target entry prints
--      its expression first, then `:resno N :resname x :ressortgroupref N
--      :resorigtbl N :resorigcol N :resjunk b}`; those fields sit in the piece
--      that starts inside the last node of the expression, after the `}` that
--      close it, and are read there with split_part.
--      (PostgREST instead rewrites the whole node tree into JSON with a chain of
--      replace() calls and one regexp_replace, and reads `->0->'targetList'`;
--      counting braces needs no JSON rewrite and ignores the other fields' format.)
--   3. resolved: recursive walk. A reference to a view column continues with that
--      view's own reference for the column (inner_refs: the references of the
--      views other views select from); it stops at a table, at a view column that
--      is not a bare column reference, or after 32 levels. Cycles are possible
--      (CREATE OR REPLACE VIEW can make views select from each other, or a view
--      from itself); such chains never reach a table and produce no rows.
--   4. Keep chains that end at a table column (attnum > 0, not dropped) and name
--      everything through the catalogs.
--
-- Limits
--   * Only bare column references map. `id::text`, `coalesce(a, b)`, `a + 0`, a
--     column of a FULL JOIN ... USING (a merged column is a COALESCE), a whole-row
--     reference and system columns (ctid, ...) do not.
--   * Set operations (UNION / INTERSECT / EXCEPT): the parser leaves resorigtbl at
--     0 for the columns of a set-operation query, so no column of such a view maps
--     (PostgREST behaves the same: its query reads the same fields). A UNION
--     inside a FROM subquery gives 0 for those columns too.
--   * Columns of set-returning functions, VALUES lists, recursive CTEs and
--     foreign tables ('f') do not map. A view column over a non-mapping column of
--     another view does not map either.
--   * Junk entries (ORDER BY a column not selected) have resno beyond the view's
--     columns and drop out at the pg_attribute join.
--   * Materialized views are followed like views (the matview's query is what
--     defines its columns), although a matview's data is a snapshot.
--   * The depth count relies on the node-tree text format: nodes in `{...}`,
--     braces and spaces inside names escaped with a backslash, and a target
--     entry's `:resno N`, `:resorigtbl N` and `:resorigcol N` printed after its
--     expression. That is the format PostgreSQL has used for many releases (tested
--     on 15); the node dump is internal, so re-check it on a new major version.
--   * Cost: every needed rule's text is read once (35-50 ms for 539 views,
--     1.3 MB of rule text, on the PostgREST conformance fixtures).
--   * Permissions are not considered: a view's mapping is returned whatever the
--     current role may see; filter afterwards if needed.
WITH RECURSIVE
needed_views (oid, is_dependency) AS (
    SELECT c.oid, false
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm')
       AND n.nspname = ANY ($1::text[])
    UNION
    -- views that a needed view's rule reads from (UNION: each once; ends on cycles)
    SELECT dep.refobjid, true
      FROM needed_views nv
      JOIN pg_rewrite r ON r.ev_class = nv.oid AND r.rulename = '_RETURN'
      JOIN pg_depend dep ON dep.classid = 'pg_rewrite'::regclass
                        AND dep.objid = r.oid
                        AND dep.refclassid = 'pg_class'::regclass
                        AND dep.refobjid <> nv.oid
      JOIN pg_class c ON c.oid = dep.refobjid AND c.relkind IN ('v', 'm')
),
pieces AS (
    -- The rule text cut at every `{` (node start), after removing escaped
    -- characters (`\\` first, then `\{` and `\}`) so that only real braces count.
    -- Piece k (k >= 2) starts just inside the (k-1)-th node.
    SELECT r.ev_class AS view_oid,
           p.ord,
           octet_length(p.piece) - octet_length(replace(p.piece, '}', '')) AS closes,
           CASE WHEN strpos(p.piece, ':resno ') > 0 THEN p.piece END AS te_tail
      FROM (SELECT DISTINCT oid FROM needed_views) nv
      JOIN pg_rewrite r ON r.ev_class = nv.oid AND r.rulename = '_RETURN'
      CROSS JOIN LATERAL unnest(string_to_array(
          replace(replace(replace(r.ev_action::text, '\\', ''), '\{', ''), '\}', ''),
          '{')) WITH ORDINALITY AS p(piece, ord)
),
depths AS (
    -- nesting depth at the start of each piece: nodes opened so far minus nodes closed
    -- in the earlier pieces (the view's own query node is depth 1)
    SELECT view_oid,
           te_tail,
           ord - 1 - coalesce(sum(closes) OVER (PARTITION BY view_oid ORDER BY ord
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS depth
      FROM pieces
),
direct_refs AS (
    -- Target entries of the view's own query: the `:resno` at depth 2 (the depth at
    -- the piece start minus the `}` before `:resno` in the piece, which close the
    -- entry's expression). Each such piece holds that entry's remaining fields
    -- `:resno N :resname x :ressortgroupref N :resorigtbl N :resorigcol N ...`;
    -- a name cannot contain `:resorigtbl ` (its spaces are escaped).
    -- view column number -> (relation, column); only bare column references.
    -- (NULLIF: a missing field gives NULL, never a cast error, and drops out below)
    SELECT view_oid,
           nullif(split_part(split_part(te_tail, ':resno ', 2), ' ', 1), '')::int2      AS view_attnum,
           nullif(split_part(split_part(te_tail, ':resorigtbl ', 2), ' ', 1), '')::oid  AS ref_rel,
           nullif(split_part(split_part(te_tail, ':resorigcol ', 2), ' ', 1), '')::int2 AS ref_attnum
      FROM (SELECT d.view_oid, d.te_tail
              FROM depths d
             WHERE d.te_tail IS NOT NULL
               AND d.depth - (octet_length(split_part(d.te_tail, ':resno ', 1))
                              - octet_length(replace(split_part(d.te_tail, ':resno ', 1), '}', '')))
                   = 2
            OFFSET 0  -- evaluate the depth test first, then parse only those entries
           ) te
),
inner_refs AS (
    -- the references of views that other needed views select from
    SELECT d.*
      FROM direct_refs d
     WHERE d.view_oid IN (SELECT oid FROM needed_views WHERE is_dependency)
       AND d.ref_rel <> 0 AND d.ref_attnum > 0
       AND d.ref_rel <> d.view_oid  -- a view selecting from itself never resolves
),
resolved AS (
    SELECT d.view_oid, d.view_attnum, d.ref_rel, d.ref_attnum, 1 AS level
      FROM direct_refs d
      JOIN pg_class c ON c.oid = d.view_oid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY ($1::text[])
       AND d.ref_rel <> 0 AND d.ref_attnum > 0  -- 0: not a bare column reference
    UNION ALL
    -- the reference is itself a view column: continue with that column's reference
    SELECT r.view_oid, r.view_attnum, d.ref_rel, d.ref_attnum, r.level + 1
      FROM resolved r
      JOIN inner_refs d ON d.view_oid = r.ref_rel AND d.view_attnum = r.ref_attnum
     WHERE r.level < 32
)
SELECT vn.nspname::text AS view_schema,
       v.relname::text  AS view_name,
       va.attname::text AS view_column,
       bn.nspname::text AS base_schema,
       b.relname::text  AS base_table,
       ba.attname::text AS base_column
  FROM resolved r
  JOIN pg_class b ON b.oid = r.ref_rel AND b.relkind IN ('r', 'p')
  JOIN pg_namespace bn ON bn.oid = b.relnamespace
  JOIN pg_attribute ba ON ba.attrelid = b.oid AND ba.attnum = r.ref_attnum
                      AND NOT ba.attisdropped
  JOIN pg_class v ON v.oid = r.view_oid
  JOIN pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum = r.view_attnum
                      AND NOT va.attisdropped
 ORDER BY vn.nspname, v.relname, r.view_attnum
