-- Live queries: pgr.subscribe() registers a read-only SELECT; statement triggers on
-- every table it reads recompute its result inside the writing transaction, diff it
-- against the stored snapshot (row hashes) and NOTIFY channel 'pgr' with
--   {"query_id", "seq", "inserted": [...], "deleted": [...]}
-- ({"type": "invalidated"} in mode 'notify'; {"type": "overflow", "fetch": true} when
-- the payload exceeds 7897 bytes or the query cannot be evaluated). NOTIFY is
-- transactional, so a rolled-back write sends nothing.
--
-- Locking: the refresh takes the subscription's row lock (FOR UPDATE) until the
-- writer commits, so concurrent writers to one subscription serialise: each diff
-- starts from the snapshot the previous committed writer left, and seq grows by
-- exactly one per message in commit order. Subscriptions are locked in query_id
-- order to avoid deadlocks.
--
-- Fast path: a single-table filter (pgr.live_query_shape(query) = 'row': one table,
-- plain columns, a predicate over the row itself) is not recomputed. Its own
-- statement triggers with transition tables (a generated function, static SQL)
-- test the query's predicate on the written rows themselves and keep the keys that
-- are in the result or in the snapshot; only those rows are re-read (by key) and
-- compared with their snapshot rows. A write that touches no row of the result —
-- before or after — returns without taking the subscription's lock, so writers
-- outside the filter never serialise on it. The cost of a write does not grow with
-- the size of the result. TRUNCATE recomputes.
--
-- Row identity: the result's key columns (default: a column named id) must be unique.
-- Results are global: the query runs with the extension owner's rights, so queries
-- that depend on the viewer (auth.uid(), current_setting, current_user: found in the
-- parse tree by pgr.live_query_viewer_dependency) are refused;
-- register one subscription per viewer instead, with the user id written in.
--
-- Exposure is deliberate: since row-level security does not apply to the shared
-- result, a query that reads a table with RLS enabled (directly or through views) is
-- refused unless it has a non-empty audience (who may subscribe) or is registered
-- with public => true (every row goes to every subscriber, on purpose). The gateway
-- re-checks at connect time, for tables that got RLS after registration.
-- Client broadcast frames are refused on live-query channels unless the query was
-- registered with allow_broadcast => true (they are server-to-client by default).

CREATE TABLE pgr.live_queries (
    query_id    text PRIMARY KEY CHECK (query_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    query       text NOT NULL,
    mode        text NOT NULL DEFAULT 'delta' CHECK (mode IN ('delta', 'notify')),
    key_columns text[] NOT NULL,
    audience    jsonb CHECK (audience IS NULL OR jsonb_typeof(audience) = 'object'),
    view_name   name NOT NULL,
    tables      oid[] NOT NULL,
    fast        boolean NOT NULL DEFAULT false,
    seq         bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Registered with public => true: exposed to every subscriber despite RLS.
    public      boolean NOT NULL DEFAULT false,
    -- Registered with allow_broadcast => true: clients may broadcast on the channel.
    allow_broadcast boolean NOT NULL DEFAULT false
);

CREATE TABLE pgr.live_rows (
    query_id text NOT NULL REFERENCES pgr.live_queries ON DELETE CASCADE,
    row_key  text NOT NULL,
    row_hash text NOT NULL,
    row_data jsonb NOT NULL,
    PRIMARY KEY (query_id, row_key)
);

CREATE VIEW pgr.subscriptions AS
    SELECT query_id, query, mode, key_columns, audience,
           (SELECT array_agg(t::regclass ORDER BY t) FROM unnest(tables) t) AS tables,
           fast AS fast_path, seq, created_at, public, allow_broadcast
      FROM pgr.live_queries;
COMMENT ON VIEW pgr.subscriptions IS 'Registered live queries (pgr.subscribe)';

-- The gateway reads registrations (mode, audience) before upgrading a WebSocket.
GRANT USAGE ON SCHEMA pgr TO authenticator;
GRANT SELECT ON pgr.subscriptions TO authenticator;

-- The current result as (key, hash, row).
CREATE FUNCTION pgr._result(q pgr.live_queries) RETURNS TABLE (row_key text, row_hash text, row_data jsonb)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    key_expr text := (SELECT 'jsonb_build_array(' || string_agg(format('d -> %L', k), ', ') || ')::text'
                        FROM unnest(q.key_columns) k);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT %s, md5(d::text), d FROM (SELECT to_jsonb(_r) AS d FROM pgr.%I _r) _s',
        key_expr, q.view_name);
END
$$;

-- Base tables a relation reads, through views.
CREATE FUNCTION pgr._base_tables(rel oid) RETURNS SETOF oid
LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE deps(oid, kind) AS (
        SELECT DISTINCT d.refobjid, c.relkind
          FROM pg_rewrite r
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                          AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rel
          JOIN pg_class c ON c.oid = d.refobjid
         WHERE r.ev_class = rel
        UNION
        SELECT DISTINCT d.refobjid, c.relkind
          FROM deps
          JOIN pg_rewrite r ON r.ev_class = deps.oid AND deps.kind = 'v'
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                          AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> deps.oid
          JOIN pg_class c ON c.oid = d.refobjid
    )
    SELECT oid FROM deps WHERE kind IN ('r', 'p', 'm', 'f')
$$;

-- Stores a diff in the snapshot, advances seq and notifies: the delta, an
-- 'invalidated' frame (mode notify) or an overflow when the payload is too large.
-- The caller holds the subscription's row lock.
CREATE FUNCTION pgr._publish(q pgr.live_queries, came jsonb, gone jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   bigint;
    msg text;
BEGIN
    DELETE FROM pgr.live_rows r
     WHERE r.query_id = q.query_id AND r.row_key IN (SELECT x ->> 0 FROM jsonb_array_elements(gone) x);
    INSERT INTO pgr.live_rows (query_id, row_key, row_hash, row_data)
    SELECT q.query_id, x ->> 0, x ->> 1, x -> 2 FROM jsonb_array_elements(came) x;
    UPDATE pgr.live_queries SET seq = seq + 1 WHERE query_id = q.query_id RETURNING seq INTO s;
    IF q.mode = 'notify' THEN
        msg := json_build_object('type', 'invalidated', 'query_id', q.query_id, 'seq', s)::text;
    ELSE
        msg := json_build_object('query_id', q.query_id, 'seq', s,
                   'inserted', (SELECT coalesce(json_agg(x -> 2), '[]') FROM jsonb_array_elements(came) x),
                   'deleted', (SELECT coalesce(json_agg(x -> 2), '[]') FROM jsonb_array_elements(gone) x))::text;
        IF octet_length(msg) > 8000 - length('pgr') - 100 THEN
            msg := json_build_object('type', 'overflow', 'query_id', q.query_id, 'seq', s, 'fetch', true)::text;
        END IF;
    END IF;
    PERFORM pg_notify('pgr', msg);
END
$$;

-- A failed refresh: a warning, and an overflow so clients re-fetch.
CREATE FUNCTION pgr._overflow(qid text, why text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s bigint;
BEGIN
    RAISE WARNING 'pgstack: live query % cannot be refreshed: %', qid, why;
    UPDATE pgr.live_queries SET seq = seq + 1 WHERE query_id = qid RETURNING seq INTO s;
    PERFORM pg_notify('pgr', json_build_object('type', 'overflow', 'query_id', qid, 'seq', s, 'fetch', true)::text);
END
$$;

-- The change between `cur` (a jsonb array of [row_key, row_hash, row_data], the
-- result now — all of it, or only the rows of `keys`) and the stored snapshot (all of
-- it, or the rows of `keys`): rows that came (new or changed) and rows that went.
CREATE FUNCTION pgr._diff(qid text, cur jsonb, keys text[], OUT came jsonb, OUT gone jsonb)
LANGUAGE sql STABLE
AS $$
    WITH c0 AS (SELECT x ->> 0 AS row_key, x ->> 1 AS row_hash, x -> 2 AS row_data FROM jsonb_array_elements(cur) x),
         -- Two branches, not `keys IS NULL OR ...`: the keyed one probes the primary key
         -- instead of reading the whole snapshot (the other is cut at run time).
         old AS (SELECT r.row_key, r.row_hash, r.row_data FROM pgr.live_rows r WHERE r.query_id = qid AND keys IS NULL
                 UNION ALL
                 SELECT r.row_key, r.row_hash, r.row_data FROM pgr.live_rows r WHERE r.query_id = qid AND r.row_key = ANY (keys)),
         c AS (SELECT c0.* FROM c0 LEFT JOIN old USING (row_key) WHERE old.row_key IS NULL OR old.row_hash <> c0.row_hash),
         g AS (SELECT old.* FROM old LEFT JOIN c0 USING (row_key) WHERE c0.row_key IS NULL OR old.row_hash <> c0.row_hash)
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_array(row_key, row_hash, row_data) ORDER BY row_key), '[]') FROM c),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(row_key, row_hash, row_data) ORDER BY row_key), '[]') FROM g)
$$;

-- Recomputes one subscription and notifies its change. Never fails the writer: an
-- error (the query no longer runs, duplicate keys) becomes an overflow message.
CREATE FUNCTION pgr._refresh(qid text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q      pgr.live_queries;
    cur    jsonb;
    came   jsonb;
    gone   jsonb;
BEGIN
    SELECT * INTO q FROM pgr.live_queries WHERE query_id = qid FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    BEGIN
        SELECT coalesce(jsonb_agg(jsonb_build_array(r.row_key, r.row_hash, r.row_data)), '[]') INTO cur FROM pgr._result(q) r;
        IF (SELECT count(*) <> count(DISTINCT x ->> 0) FROM jsonb_array_elements(cur) x) THEN
            RAISE EXCEPTION 'live query % returns duplicate keys %', qid, q.key_columns;
        END IF;
        SELECT d.came, d.gone INTO came, gone FROM pgr._diff(qid, cur, NULL) d;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pgr._overflow(qid, SQLERRM);
        RETURN;
    END;
    IF came = '[]' AND gone = '[]' THEN
        RETURN;
    END IF;
    PERFORM pgr._publish(q, came, gone);
END
$$;

-- The fast path's trigger function of one subscription, generated at registration
-- with static SQL only (plpgsql caches every plan). The view's own definition,
-- deparsed, is evaluated over a CTE that shadows the base table's name:
--   * over the transition table, to find the written rows that are in the result
--     now — the predicate is tested on the rows themselves, the table is not read;
--   * over the base table's rows of the touched keys only (read by key first,
--     MATERIALIZED), to re-read those rows after taking the subscription's lock —
--     whatever the planner thinks of the predicate's selectivity.
-- The keys that matter are those in the result now or in the snapshot (one primary
-- key probe each); a write that touches none returns without locking anything.
-- Returns false (the fast path is not used) when the definition cannot be shadowed.
CREATE FUNCTION pgr._fast_trigger(q pgr.live_queries) RETURNS boolean
LANGUAGE plpgsql
AS $fast$
DECLARE
    fname   text := q.view_name || '_rows';
    base    regclass := q.tables[1]::regclass;
    relname name;
    nsp     name;
    def     text;
    old_sp  text := current_setting('search_path');
    key_t   text := (SELECT 'jsonb_build_array(' || string_agg(format('t.%I', k), ', ') || ')::text' FROM unnest(q.key_columns) k);
    key_d   text := (SELECT 'jsonb_build_array(' || string_agg(format('d -> %L', k), ', ') || ')::text' FROM unnest(q.key_columns) k);
    key_in  text;
    in_snap text;
    trig    text := 'pgr_live_rows_' || md5(q.query_id);
BEGIN
    SELECT c.relname, n.nspname INTO relname, nsp FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = base;
    -- Deparse with only the table's schema visible, so the table is named unqualified
    -- (anything of another schema qualified); the generated function resolves names
    -- with the same search_path.
    PERFORM set_config('search_path', format('pg_catalog, %I', nsp), true);
    def := pg_get_viewdef(format('pgr.%I', q.view_name)::regclass, false);
    PERFORM set_config('search_path', old_sp, true);
    def := rtrim(btrim(def), ';');
    IF def !~ ('\mFROM\s+' || regexp_replace(quote_ident(relname), '([^A-Za-z0-9_])', '\\\1', 'g') || '(\s|$)') THEN
        RETURN false;
    END IF;
    -- The base table's rows whose key is in `keys` (text, as stored in live_rows).
    SELECT '(' || string_agg(format('_b.%I', k), ', ' ORDER BY o) || ') IN (SELECT '
               || string_agg(format('(_k::jsonb ->> %s)::%s', o - 1, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
               || ' FROM unnest(keys) _k)'
      INTO key_in
      FROM unnest(q.key_columns) WITH ORDINALITY AS u(k, o)
      JOIN pg_attribute a ON a.attrelid = base AND a.attname = u.k;
    in_snap := format('EXISTS (SELECT 1 FROM pgr.live_rows r WHERE r.query_id = %L AND r.row_key = %s)', q.query_id, key_t);
    EXECUTE format($f$
        CREATE FUNCTION pgr.%1$I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %10$I, pg_temp
        AS $body$
        DECLARE
            keys text[];
            cur  jsonb;
            came jsonb;
            gone jsonb;
            q    pgr.live_queries;
        BEGIN
            -- Rows in the result now (the predicate over the new rows) or in the snapshot.
            IF TG_OP = 'INSERT' THEN
                SELECT array_agg(DISTINCT k) INTO keys FROM (
                    SELECT %2$s AS k FROM (SELECT to_jsonb(_v) AS d FROM (WITH %3$I AS (SELECT * FROM pgr_new) %4$s) _v) _s
                    UNION ALL SELECT %5$s FROM pgr_new t WHERE %6$s) x;
            ELSIF TG_OP = 'UPDATE' THEN
                SELECT array_agg(DISTINCT k) INTO keys FROM (
                    SELECT %2$s AS k FROM (SELECT to_jsonb(_v) AS d FROM (WITH %3$I AS (SELECT * FROM pgr_new) %4$s) _v) _s
                    UNION ALL SELECT %5$s FROM pgr_new t WHERE %6$s
                    UNION ALL SELECT %5$s FROM pgr_old t WHERE %6$s) x;
            ELSE
                SELECT array_agg(DISTINCT %5$s) INTO keys FROM pgr_old t WHERE %6$s;
            END IF;
            IF keys IS NULL THEN
                RETURN NULL;
            END IF;
            -- Serialise with other writers of this subscription, then read the rows as
            -- committed (a writer that waited sees what the previous one left) and diff
            -- them against the snapshot.
            SELECT * INTO q FROM pgr.live_queries WHERE query_id = %7$L FOR UPDATE;
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
            BEGIN
                SELECT coalesce(jsonb_agg(jsonb_build_array(%2$s, md5(d::text), d)), '[]') INTO cur
                  FROM (SELECT to_jsonb(_v) AS d
                          FROM (WITH %3$I AS MATERIALIZED (SELECT _b.* FROM %8$s _b WHERE %9$s) %4$s) _v) _s
                 WHERE %2$s = ANY (keys);
                SELECT d.came, d.gone INTO came, gone FROM pgr._diff(q.query_id, cur, keys) d;
            EXCEPTION WHEN OTHERS THEN
                PERFORM pgr._overflow(q.query_id, SQLERRM);
                RETURN NULL;
            END;
            IF came <> '[]' OR gone <> '[]' THEN
                PERFORM pgr._publish(q, came, gone);
            END IF;
            RETURN NULL;
        END
        $body$$f$,
        fname, key_d, relname, def, key_t, in_snap, q.query_id, format('%I.%I', nsp, relname), key_in, nsp);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION pgr.%I() FROM PUBLIC', fname);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS pgr_new
                    FOR EACH STATEMENT EXECUTE FUNCTION pgr.%I()', trig || '_ins', base, fname);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgr_old NEW TABLE AS pgr_new
                    FOR EACH STATEMENT EXECUTE FUNCTION pgr.%I()', trig || '_upd', base, fname);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS pgr_old
                    FOR EACH STATEMENT EXECUTE FUNCTION pgr.%I()', trig || '_del', base, fname);
    RETURN true;
END
$fast$;

-- Statement trigger shared by every subscription reading the table.
CREATE FUNCTION pgr._on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid text;
BEGIN
    -- Fast-path subscriptions have their own triggers, except for TRUNCATE.
    FOR qid IN SELECT query_id FROM pgr.live_queries
                WHERE TG_RELID = ANY (tables) AND (NOT fast OR TG_OP = 'TRUNCATE') ORDER BY query_id LOOP
        PERFORM pgr._refresh(qid);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION pgr._sync_triggers() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t oid;
BEGIN
    -- TRUNCATE recomputes every subscription of the table; other writes recompute the
    -- subscriptions without a fast path (those have their own transition triggers).
    FOR t IN SELECT DISTINCT unnest(tables) FROM pgr.live_queries LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgr_live_truncate') THEN
            EXECUTE format('CREATE TRIGGER pgr_live_truncate AFTER TRUNCATE ON %s
                            FOR EACH STATEMENT EXECUTE FUNCTION pgr._on_change()', t::regclass);
        END IF;
    END LOOP;
    FOR t IN SELECT DISTINCT unnest(tables) FROM pgr.live_queries WHERE NOT fast LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgr_live_change') THEN
            EXECUTE format('CREATE TRIGGER pgr_live_change AFTER INSERT OR UPDATE OR DELETE ON %s
                            FOR EACH STATEMENT EXECUTE FUNCTION pgr._on_change()', t::regclass);
        END IF;
    END LOOP;
    -- ... and remove them where none needs them any more.
    FOR t IN SELECT tgrelid FROM pg_trigger WHERE tgname = 'pgr_live_change'
              AND NOT EXISTS (SELECT 1 FROM pgr.live_queries WHERE NOT fast AND tgrelid = ANY (tables)) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS pgr_live_change ON %s', t::regclass);
    END LOOP;
    FOR t IN SELECT tgrelid FROM pg_trigger WHERE tgname = 'pgr_live_truncate'
              AND NOT EXISTS (SELECT 1 FROM pgr.live_queries WHERE tgrelid = ANY (tables)) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS pgr_live_truncate ON %s', t::regclass);
    END LOOP;
END
$$;

-- Registers (or replaces) a live query.
CREATE FUNCTION pgr.subscribe(
    query_id text,
    query text,
    mode text DEFAULT 'delta',
    audience jsonb DEFAULT NULL,
    key_columns text[] DEFAULT ARRAY['id'],
    public boolean DEFAULT false,
    allow_broadcast boolean DEFAULT false
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    vname name := 'live_' || md5(subscribe.query_id);
    rel   oid;
    deps  oid[];
    bad   text;
    q     pgr.live_queries;
BEGIN
    IF subscribe.query_id IS NULL OR subscribe.query_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'invalid query_id %', subscribe.query_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'letters, digits, _ . : - ; at most 128; not starting with _ (reserved for ad-hoc channels)';
    END IF;
    IF subscribe.mode NOT IN ('delta', 'notify') THEN
        RAISE EXCEPTION 'mode must be delta or notify' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgr.check_live_query(subscribe.query);
    bad := pgr.live_query_viewer_dependency(subscribe.query);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'live query % depends on the viewer (%)', subscribe.query_id, bad
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'results are shared by every subscriber; register one subscription per viewer with the user id written into the query';
    END IF;
    PERFORM pgr.unsubscribe(subscribe.query_id);
    EXECUTE format('CREATE VIEW pgr.%I AS %s', vname, subscribe.query);
    rel := format('pgr.%I', vname)::regclass;
    SELECT string_agg(k, ', ') INTO bad FROM unnest(subscribe.key_columns) k
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = rel AND attname = k AND NOT attisdropped);
    IF bad IS NOT NULL OR cardinality(subscribe.key_columns) = 0 THEN
        RAISE EXCEPTION 'live query % has no key column %', subscribe.query_id, coalesce(bad, '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the result needs a unique row identity: a column named id, or pass key_columns';
    END IF;
    SELECT array_agg(DISTINCT b) INTO deps FROM pgr._base_tables(rel) b;
    IF deps IS NULL THEN
        RAISE EXCEPTION 'live query % reads no table', subscribe.query_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(c.oid::regclass::text, ', ') INTO bad FROM pg_class c WHERE c.oid = ANY (deps) AND c.relkind NOT IN ('r', 'p');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'live query % reads % (only tables can be watched)', subscribe.query_id, bad
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- The result bypasses row-level security (it is computed once, with the owner's
    -- rights, for every subscriber): exposing it must be deliberate.
    SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid) INTO bad
      FROM pg_class c WHERE c.oid = ANY (deps) AND c.relrowsecurity;
    IF bad IS NOT NULL AND (subscribe.audience IS NULL OR subscribe.audience = '{}'::jsonb)
       AND NOT coalesce(subscribe.public, false) THEN
        RAISE EXCEPTION 'live query % reads % with row-level security enabled, but its result would go to every subscriber regardless of RLS',
                        subscribe.query_id, bad
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'pass audience => ''{"role": "authenticated", ...}'' to choose who may subscribe, or public => true to expose every row of the result to every subscriber';
    END IF;
    INSERT INTO pgr.live_queries (query_id, query, mode, key_columns, audience, view_name, tables, public, allow_broadcast, fast)
    VALUES (subscribe.query_id, subscribe.query, subscribe.mode, subscribe.key_columns, subscribe.audience, vname, deps,
            coalesce(subscribe.public, false), coalesce(subscribe.allow_broadcast, false),
            -- The fast path needs the view's key columns to be the table's own columns.
            pgr.live_query_shape(subscribe.query) = 'row' AND cardinality(deps) = 1
            AND NOT EXISTS (SELECT 1 FROM unnest(subscribe.key_columns) k
                             WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                                                WHERE a.attrelid = deps[1] AND a.attname = k AND NOT a.attisdropped)))
    RETURNING * INTO q;
    INSERT INTO pgr.live_rows (query_id, row_key, row_hash, row_data)
    SELECT q.query_id, r.row_key, r.row_hash, r.row_data FROM pgr._result(q) r;
    IF q.fast AND NOT pgr._fast_trigger(q) THEN
        UPDATE pgr.live_queries l SET fast = false WHERE l.query_id = q.query_id;
    END IF;
    PERFORM pgr._sync_triggers();
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'live query % returns duplicate keys %', subscribe.query_id, subscribe.key_columns
        USING ERRCODE = 'invalid_parameter_value', HINT = 'key_columns must identify each row of the result';
END
$$;

-- Removes a live query (and the triggers no other one needs). True if it existed.
CREATE FUNCTION pgr.unsubscribe(query_id text) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    q pgr.live_queries;
BEGIN
    DELETE FROM pgr.live_queries l WHERE l.query_id = unsubscribe.query_id RETURNING * INTO q;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The fast path's function goes with its triggers.
    EXECUTE format('DROP FUNCTION IF EXISTS pgr.%I() CASCADE', q.view_name || '_rows');
    EXECUTE format('DROP VIEW IF EXISTS pgr.%I', q.view_name);
    PERFORM pgr._sync_triggers();
    RETURN true;
END
$$;

-- Registering reads any table with the owner's rights: not for everyone.
REVOKE EXECUTE ON FUNCTION pgr.subscribe(text, text, text, jsonb, text[], boolean, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgr.unsubscribe(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgr._refresh(text), pgr._sync_triggers(), pgr._fast_trigger(pgr.live_queries),
    pgr._publish(pgr.live_queries, jsonb, jsonb), pgr._overflow(text, text), pgr._diff(text, jsonb, text[]) FROM PUBLIC;
