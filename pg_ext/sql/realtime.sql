-- Supabase Realtime inside Postgres (the gateway speaks the Phoenix protocol at
-- /realtime/v1/websocket; see gateway/src/channels/).
--
-- * realtime.messages: what private channels are authorised by (RLS policies on it,
--   with realtime.topic() and the extension column, as Supabase Realtime
--   Authorization), and the broadcasts sent from SQL (realtime.send,
--   realtime.broadcast_changes). An inserted message reaches every gateway by
--   NOTIFY 'pgr_realtime' when its transaction commits; a rolled-back one never does
--   (authorisation probes are always rolled back).
-- * postgres_changes: the tables in the publication supabase_realtime (the SQL
--   Supabase apps already run: ALTER PUBLICATION supabase_realtime ADD TABLE ...)
--   get a row trigger, realtime.capture(), kept in step with the publication by an
--   event trigger. Each change is one NOTIFY 'pgr_realtime' in commit order; the
--   gateway decides per subscriber, under that subscriber's role and claims, whether
--   the row may be seen (RLS), before anything is sent. The old record carries the
--   primary key only, unless the table's replica identity is FULL and it has no RLS
--   (as Supabase).
--   A change over NOTIFY's size keeps the values of 64 bytes or less and says
--   "Error 413: Payload Too Large" in its errors, as Supabase does over 1 MB.

CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role, authenticator;

CREATE TABLE realtime.messages (
    id          uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    topic       text NOT NULL,
    extension   text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    payload     jsonb,
    event       text,
    private     boolean DEFAULT true,
    inserted_at timestamp NOT NULL DEFAULT now(),
    updated_at  timestamp NOT NULL DEFAULT now()
);
CREATE INDEX messages_inserted_at ON realtime.messages (inserted_at);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated, service_role;
COMMENT ON TABLE realtime.messages IS 'Realtime broadcasts from SQL, and the table whose RLS policies authorise private channels';

-- The topic being authorised (set by the gateway, and by realtime.send).
CREATE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('realtime.topic', true), '')::text $$;
GRANT EXECUTE ON FUNCTION realtime.topic() TO anon, authenticated, service_role;

-- Probe rows for a read check (inserted as the extension's owner, then read as the
-- subscriber, then rolled back by the gateway), as Supabase Realtime Authorization.
CREATE FUNCTION realtime._probe(ids uuid[], topic text, extensions text[]) RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    INSERT INTO realtime.messages (id, topic, extension, private)
    SELECT x.i, topic, x.e, true FROM unnest(ids, extensions) AS x(i, e)
$$;
REVOKE ALL ON FUNCTION realtime._probe(uuid[], text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime._probe(uuid[], text, text[]) TO authenticator;

-- The gateway's read of broadcast messages by id (on its own login, which has no
-- grant on the table): payloads over NOTIFY's limit, and the check that a message
-- announced on the bus really was committed (a NOTIFY anyone may send is not trusted).
CREATE FUNCTION realtime._messages(ids uuid[]) RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    -- Only recent messages: an old id announced again is not a new message.
    SELECT json_build_object('id', m.id, 'topic', m.topic, 'event', m.event, 'private', m.private, 'payload', m.payload)::text
    FROM realtime.messages m WHERE m.id = ANY (ids) AND m.inserted_at > now() - interval '10 minutes'
$$;
REVOKE ALL ON FUNCTION realtime._messages(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime._messages(uuid[]) TO authenticator;

-- Committed broadcast messages go to every gateway: the NOTIFY carries only the id
-- (any role may NOTIFY, so the gateways read each message back from the table).
CREATE FUNCTION realtime._notify_message() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.extension <> 'broadcast' OR (NEW.event IS NULL AND NEW.payload IS NULL) THEN
        RETURN NULL;  -- authorisation probes (always rolled back) carry neither
    END IF;
    PERFORM pg_notify('pgr_realtime', json_build_object('k', 'm', 'id', NEW.id)::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER notify_message AFTER INSERT ON realtime.messages
    FOR EACH ROW EXECUTE FUNCTION realtime._notify_message();

-- Broadcast from SQL, as Supabase's realtime.send: never fails the caller (a
-- refused insert is a WARNING).
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    generated_id uuid := gen_random_uuid();
    final_payload jsonb;
BEGIN
    BEGIN
        final_payload := CASE WHEN payload ? 'id' THEN payload ELSE payload || jsonb_build_object('id', generated_id) END;
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
        VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'ErrorSendingBroadcastMessage: %', SQLERRM;
    END;
END
$$;
GRANT EXECUTE ON FUNCTION realtime.send(jsonb, text, text, boolean) TO anon, authenticated, service_role;

-- Messages are kept for REALTIME_MESSAGES_RETENTION (Supabase keeps three days of
-- them); the gateway calls this periodically. Deletes in bounded batches.
CREATE FUNCTION realtime._prune(keep interval, max_rows int DEFAULT 10000) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    WITH gone AS (
        DELETE FROM realtime.messages
         WHERE id IN (SELECT id FROM realtime.messages WHERE inserted_at < now() - keep ORDER BY inserted_at LIMIT max_rows)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION realtime._prune(interval, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime._prune(interval, int) TO authenticator;

-- A row change broadcast from a trigger, as Supabase's realtime.broadcast_changes.
CREATE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text,
                                           table_schema text, new record, old record, level text DEFAULT 'ROW') RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
    END IF;
    IF operation NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
        RAISE EXCEPTION 'unsupported operation: %', operation;
    END IF;
    PERFORM realtime.send(jsonb_build_object('old_record', CASE WHEN old IS NULL THEN NULL ELSE to_jsonb(old) END,
                                             'record', CASE WHEN new IS NULL THEN NULL ELSE to_jsonb(new) END,
                                             'operation', operation, 'table', table_name, 'schema', table_schema),
                          event_name, topic_name);
END
$$;
GRANT EXECUTE ON FUNCTION realtime.broadcast_changes(text, text, text, text, text, record, record, text) TO anon, authenticated, service_role;

-- postgres_changes: one NOTIFY per changed row of a table in supabase_realtime.
CREATE FUNCTION realtime.capture() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    new_j jsonb;
    old_j jsonb;
    full_old boolean;
    errors jsonb;
    msg text;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        new_j := to_jsonb(NEW);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_j := to_jsonb(OLD);
        -- The whole old row only with REPLICA IDENTITY FULL and no RLS (as Supabase):
        -- a DELETE is not checked against RLS, so it must not carry more than the key.
        SELECT c.relreplident = 'f' AND NOT c.relrowsecurity INTO full_old FROM pg_class c WHERE c.oid = TG_RELID;
        IF NOT full_old THEN
            old_j := (SELECT coalesce(jsonb_object_agg(a.attname, old_j -> a.attname::text), '{}')
                        FROM pg_index i
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                       WHERE i.indrelid = TG_RELID AND i.indisprimary);
        END IF;
    END IF;
    msg := jsonb_build_object('k', 'c', 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
                              'commit_timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                              'record', new_j, 'old_record', old_j)::text;
    IF octet_length(msg) > 7900 THEN
        errors := '["Error 413: Payload Too Large"]';
        new_j := (SELECT jsonb_object_agg(key, value) FROM jsonb_each(new_j) WHERE octet_length(value::text) <= 64);
        old_j := (SELECT jsonb_object_agg(key, value) FROM jsonb_each(old_j) WHERE octet_length(value::text) <= 64);
        msg := jsonb_build_object('k', 'c', 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
                                  'commit_timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                  'record', new_j, 'old_record', old_j, 'errors', errors)::text;
        IF octet_length(msg) > 7900 THEN
            msg := jsonb_build_object('k', 'c', 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
                                      'commit_timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                      'record', '{}'::jsonb, 'old_record', '{}'::jsonb, 'errors', errors)::text;
        END IF;
    END IF;
    -- A full notification queue (a listener that stopped reading) must not fail the
    -- application's write (no subtransaction per row: checked, not caught).
    IF pg_notification_queue_usage() < 0.9 THEN
        PERFORM pg_notify('pgr_realtime', msg);
    ELSE
        RAISE WARNING 'realtime: change of %.% not published: the notification queue is full', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

-- Tables in supabase_realtime get the capture trigger; tables that left it lose it.
CREATE FUNCTION realtime.sync_capture() RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel
               FROM pg_publication_tables pt
               JOIN pg_namespace n ON n.nspname = pt.schemaname
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
              WHERE pt.pubname = 'supabase_realtime' AND c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgstack_realtime_capture')
    LOOP
        EXECUTE format('CREATE TRIGGER pgstack_realtime_capture AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION realtime.capture()', r.rel);
    END LOOP;
    FOR r IN SELECT t.tgrelid::regclass AS rel
               FROM pg_trigger t
              WHERE t.tgname = 'pgstack_realtime_capture'
                AND NOT EXISTS (SELECT 1 FROM pg_publication_tables pt
                                  JOIN pg_namespace n ON n.nspname = pt.schemaname
                                  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
                                 WHERE pt.pubname = 'supabase_realtime' AND c.oid = t.tgrelid)
    LOOP
        EXECUTE format('DROP TRIGGER pgstack_realtime_capture ON %s', r.rel);
    END LOOP;
END
$$;

CREATE FUNCTION realtime._on_ddl() RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM realtime.sync_capture();
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        SET LOCAL client_min_messages = error;  -- "wal_level is insufficient": not needed here
        CREATE PUBLICATION supabase_realtime;
    END IF;
END
$$;

CREATE EVENT TRIGGER pgstack_realtime_publication ON ddl_command_end
    WHEN TAG IN ('CREATE PUBLICATION', 'ALTER PUBLICATION', 'DROP PUBLICATION', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION realtime._on_ddl();

SELECT realtime.sync_capture();
