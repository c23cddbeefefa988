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
