-- Webhooks with a durable outbox. A row trigger (installed per table by
-- pgr.webhook_create) writes one outbox row per matching webhook in the writing
-- transaction — an event exists if and only if its transaction committed — and
-- NOTIFYs 'pgr_webhooks'. Gateways claim due rows with FOR UPDATE SKIP LOCKED under a
-- lease (a gateway that dies mid-delivery releases them when the lease ends), deliver,
-- and record the outcome: delivered, retried (after 1 s, then 4 s), or dead after 3
-- attempts with the last error. Finished events are pruned by pgr.webhook_prune
-- (WEBHOOK_RETENTION, WEBHOOK_DEAD_RETENTION, WEBHOOK_RETENTION_MAX_ROWS); pending and
-- in-flight events never are.

CREATE TABLE pgr.webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url         text NOT NULL CHECK (url ~* '^https?://'),
    events      text[] NOT NULL DEFAULT '{*}'
                CHECK (events <@ ARRAY['*', 'INSERT', 'UPDATE', 'DELETE'] AND cardinality(events) > 0),
    table_name  text NOT NULL DEFAULT '*',
    relid       oid,
    secret      text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgr.webhook_outbox (
    id              bigserial PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES pgr.webhooks ON DELETE CASCADE,
    event           text NOT NULL,
    table_name      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_outbox_due_idx ON pgr.webhook_outbox (next_attempt_at) WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_outbox_finished_idx ON pgr.webhook_outbox (status, id) WHERE status IN ('delivered', 'dead');

-- The primary-key columns of `row` (a table's row as jsonb); {} when it has none.
CREATE FUNCTION pgr._webhook_key(rel oid, r jsonb) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(a.attname, r -> a.attname::text), '{}')
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = rel AND i.indisprimary
$$;

CREATE FUNCTION pgr._webhook_fire() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    body      text;
    max_bytes text := current_setting('pgstack.webhook_max_payload_bytes', true);
BEGIN
    -- record / old_record are left out when they do not apply (contract).
    body := json_build_object('event', TG_OP, 'table', TG_TABLE_NAME)::jsonb
            || CASE WHEN TG_OP <> 'DELETE' THEN jsonb_build_object('record', to_jsonb(NEW)) ELSE '{}' END
            || CASE WHEN TG_OP <> 'INSERT' THEN jsonb_build_object('old_record', to_jsonb(OLD)) ELSE '{}' END;
    -- Over pgstack.webhook_max_payload_bytes: the rows' primary keys only (the
    -- receiver reads the row), so one huge row cannot become a huge outbox. Read as a
    -- plain setting (no library load, no function call on every written row); a value
    -- that is not a number counts as the default.
    IF octet_length(body) > (CASE WHEN max_bytes ~ '^[0-9]{1,10}$' THEN max_bytes::bigint ELSE 1048576 END) THEN
        body := jsonb_build_object('event', TG_OP, 'table', TG_TABLE_NAME, 'truncated', true)
                || CASE WHEN TG_OP <> 'DELETE' THEN jsonb_build_object('record', pgr._webhook_key(TG_RELID, to_jsonb(NEW))) ELSE '{}' END
                || CASE WHEN TG_OP <> 'INSERT' THEN jsonb_build_object('old_record', pgr._webhook_key(TG_RELID, to_jsonb(OLD))) ELSE '{}' END;
    END IF;
    INSERT INTO pgr.webhook_outbox (webhook_id, event, table_name, body)
    SELECT w.id, TG_OP, TG_TABLE_NAME, body
      FROM pgr.webhooks w
     WHERE w.active
       AND (w.table_name = '*' OR w.relid = TG_RELID)
       AND (w.events && ARRAY['*', TG_OP]);
    IF FOUND THEN
        PERFORM pg_notify('pgr_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

-- Installs the row trigger where a table-specific webhook needs it, removes it where
-- none does (`*` webhooks are matchers only: Postgres has no all-tables row trigger).
CREATE FUNCTION pgr._webhook_sync() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t oid;
BEGIN
    FOR t IN SELECT DISTINCT relid FROM pgr.webhooks WHERE relid IS NOT NULL LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgr_webhook') THEN
            EXECUTE format('CREATE TRIGGER pgr_webhook AFTER INSERT OR UPDATE OR DELETE ON %s
                            FOR EACH ROW EXECUTE FUNCTION pgr._webhook_fire()', t::regclass);
        END IF;
    END LOOP;
    FOR t IN SELECT tgrelid FROM pg_trigger WHERE tgname = 'pgr_webhook'
              AND NOT EXISTS (SELECT 1 FROM pgr.webhooks WHERE relid = tgrelid) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS pgr_webhook ON %s', t::regclass);
    END LOOP;
END
$$;

CREATE FUNCTION pgr._webhook_json(w pgr.webhooks) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object('id', w.id, 'url', w.url, 'events', w.events, 'table_name', w.table_name,
                              'active', w.active, 'created_at', w.created_at)
$$;

-- Registers a webhook; `schema` resolves a table name that is not qualified.
CREATE FUNCTION pgr.webhook_create(url text, events text[] DEFAULT '{*}', table_name text DEFAULT '*',
                                   secret text DEFAULT '', schema text DEFAULT 'public')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel oid;
    w   pgr.webhooks;
BEGIN
    IF webhook_create.table_name <> '*' THEN
        rel := coalesce(to_regclass(format('%I.%I', webhook_create.schema, webhook_create.table_name)),
                        CASE WHEN position('.' IN webhook_create.table_name) > 0 THEN to_regclass(webhook_create.table_name) END);
        IF rel IS NULL OR (SELECT relkind FROM pg_class WHERE oid = rel) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION 'table % does not exist', webhook_create.table_name USING ERRCODE = 'undefined_table';
        END IF;
    END IF;
    INSERT INTO pgr.webhooks (url, events, table_name, relid, secret)
    VALUES (webhook_create.url, coalesce(webhook_create.events, '{*}'), webhook_create.table_name, rel,
            coalesce(webhook_create.secret, ''))
    RETURNING * INTO w;
    PERFORM pgr._webhook_sync();
    RETURN pgr._webhook_json(w);
END
$$;

CREATE FUNCTION pgr.webhook_list() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(pgr._webhook_json(w) ORDER BY w.created_at, w.id), '[]') FROM pgr.webhooks w
$$;

CREATE FUNCTION pgr.webhook_delete(id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgr.webhooks w WHERE w.id = webhook_delete.id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgr._webhook_sync();
    RETURN true;
END
$$;

-- Outbox events of one status (e.g. 'dead'), newest first.
CREATE FUNCTION pgr.webhook_events(status text DEFAULT 'dead', lim int DEFAULT 100) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', o.id, 'webhook_id', o.webhook_id, 'event', o.event, 'table', o.table_name,
               'status', o.status, 'attempts', o.attempts, 'last_error', o.last_error,
               'created_at', o.created_at, 'delivered_at', o.delivered_at, 'body', o.body::jsonb)
               ORDER BY o.id DESC), '[]')
      FROM (SELECT * FROM pgr.webhook_outbox WHERE webhook_outbox.status = webhook_events.status
             ORDER BY id DESC LIMIT greatest(lim, 1)) o
$$;

-- Claims up to n due events for `lease_secs` (SKIP LOCKED: gateways never share one).
CREATE FUNCTION pgr.webhook_claim(n int, lease_secs int)
RETURNS TABLE (id bigint, url text, secret text, body text, attempts int, created_at timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgr.webhook_outbox o
       SET status = 'delivering', attempts = o.attempts + 1,
           next_attempt_at = now() + make_interval(secs => lease_secs)
      FROM pgr.webhooks w
     WHERE w.id = o.webhook_id
       AND o.id IN (SELECT d.id FROM pgr.webhook_outbox d
                     WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now()
                     ORDER BY d.id LIMIT n FOR UPDATE SKIP LOCKED)
    RETURNING o.id, w.url, w.secret, o.body, o.attempts, o.created_at
$$;

-- Records the outcomes of a claimed batch in one statement: delivered; or, after a
-- failed attempt n, retried in 4^(n-1) s (1 s, 4 s, 16 s, ... at most an hour: the
-- contract's "immediately, after 1 s, after 4 s" for the default budget); or dead once
-- pgstack.webhook_max_attempts attempts failed (the database decides, for every gateway).
CREATE FUNCTION pgr.webhook_done_many(event_ids bigint[], oks boolean[], errors text[])
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgr.webhook_outbox o
       SET status = CASE WHEN r.ok THEN 'delivered' WHEN o.attempts >= pgr.webhook_max_attempts() THEN 'dead' ELSE 'pending' END,
           delivered_at = CASE WHEN r.ok THEN now() END,
           last_error = CASE WHEN r.ok THEN NULL ELSE r.error END,
           next_attempt_at = now() + CASE WHEN r.ok THEN interval '0'
                                          ELSE make_interval(secs => least(3600, power(4, greatest(o.attempts - 1, 0)))) END
      FROM unnest(event_ids, oks, errors) AS r(id, ok, error)
     WHERE o.id = r.id
$$;
REVOKE EXECUTE ON FUNCTION pgr.webhook_done_many(bigint[], boolean[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgr.webhook_done_many(bigint[], boolean[], text[]) TO authenticator;

-- Sends dead events again (all, or the given ids): back to pending with fresh attempts.
CREATE FUNCTION pgr.webhook_retry(ids bigint[] DEFAULT NULL) RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH r AS (
        UPDATE pgr.webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE status = 'dead' AND (ids IS NULL OR id = ANY (ids)) RETURNING 1)
    SELECT count(*)::int FROM r
$$;
REVOKE EXECUTE ON FUNCTION pgr.webhook_retry(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgr.webhook_retry(bigint[]) TO service_role;

REVOKE EXECUTE ON FUNCTION pgr.webhook_create(text, text[], text, text, text), pgr.webhook_list(),
    pgr.webhook_delete(uuid), pgr.webhook_events(text, int), pgr.webhook_claim(int, int),
    pgr._webhook_sync() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgr.webhook_create(text, text[], text, text, text), pgr.webhook_list(),
    pgr.webhook_delete(uuid), pgr.webhook_events(text, int) TO service_role;
-- The gateway's delivery worker runs as its login role.
GRANT EXECUTE ON FUNCTION pgr.webhook_claim(int, int) TO authenticator;

-- Deletes up to `lim` finished events past their retention, oldest first: delivered
-- events delivered more than `delivered_secs` ago or beyond the newest `max_delivered`,
-- dead events whose last attempt is more than `dead_secs` ago (0 turns a rule off).
-- Pending and delivering events are never touched (the status is checked again on
-- the locked row, so an event sent back by webhook_retry stays). One gateway prunes
-- at a time (advisory lock; the others return 0). Returns the number deleted.
CREATE FUNCTION pgr.webhook_prune(delivered_secs bigint, dead_secs bigint, max_delivered bigint, lim int)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := 0;
    k int;
    lim1 int := greatest(lim, 1);
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('pgr.webhook_prune')) THEN
        RETURN 0;
    END IF;
    IF delivered_secs > 0 THEN
        DELETE FROM pgr.webhook_outbox o
         WHERE o.id IN (SELECT d.id FROM pgr.webhook_outbox d
                         WHERE d.status = 'delivered'
                           AND d.delivered_at < now() - make_interval(secs => delivered_secs)
                         ORDER BY d.id LIMIT lim1)
           AND o.status = 'delivered';
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    IF max_delivered > 0 AND n < lim1 THEN
        DELETE FROM pgr.webhook_outbox o
         WHERE o.id IN (SELECT d.id FROM pgr.webhook_outbox d
                         WHERE d.status = 'delivered'
                           AND d.id < (SELECT e.id FROM pgr.webhook_outbox e WHERE e.status = 'delivered'
                                        ORDER BY e.id DESC OFFSET max_delivered - 1 LIMIT 1)
                         ORDER BY d.id LIMIT lim1 - n)
           AND o.status = 'delivered';
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    -- A dead event's next_attempt_at is the time of its last attempt.
    IF dead_secs > 0 AND n < lim1 THEN
        DELETE FROM pgr.webhook_outbox o
         WHERE o.id IN (SELECT d.id FROM pgr.webhook_outbox d
                         WHERE d.status = 'dead'
                           AND d.next_attempt_at < now() - make_interval(secs => dead_secs)
                         ORDER BY d.id LIMIT lim1 - n)
           AND o.status = 'dead';
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    RETURN n;
END
$$;
REVOKE EXECUTE ON FUNCTION pgr.webhook_prune(bigint, bigint, bigint, int) FROM PUBLIC;
-- The gateway's pruning task runs as its login role.
GRANT EXECUTE ON FUNCTION pgr.webhook_prune(bigint, bigint, bigint, int) TO authenticator;
