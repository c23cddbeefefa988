-- Schema-cache invalidation for the REST API: after every DDL command the gateway is
-- told to reload its schema cache, on the channel PostgREST setups already use
-- (`NOTIFY pgrst, 'reload schema'` works by hand as well).

CREATE FUNCTION pgr.notify_schema_change() RETURNS event_trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('pgrst', 'reload schema');
END
$$;

CREATE EVENT TRIGGER pgstack_ddl_end ON ddl_command_end
    EXECUTE FUNCTION pgr.notify_schema_change();
CREATE EVENT TRIGGER pgstack_sql_drop ON sql_drop
    EXECUTE FUNCTION pgr.notify_schema_change();

-- A write under Accept: application/vnd.pgrst.object must touch exactly one row. The
-- gateway calls this in the write's own statement (HAVING over the returned rows), so
-- anything else aborts that statement — and its transaction — with PostgREST's 406
-- PGRST116 body (RAISE SQLSTATE 'PGRST', as a function may).
CREATE FUNCTION pgr.expect_one(n bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF n = 1 THEN
        RETURN true;
    END IF;
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = json_build_object('code', 'PGRST116', 'message', 'Cannot coerce the result to a single JSON object',
                                    'details', format('The result contains %s rows', n), 'hint', NULL)::text,
        DETAIL = '{"status": 406}';
END
$$;
GRANT EXECUTE ON FUNCTION pgr.expect_one(bigint) TO anon, authenticated, service_role;

