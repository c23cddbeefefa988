-- Edge functions catalog. runtime 'deno': `source` is a module run by the gateway's
-- Deno worker (Deno.serve(handler), export default handler or { fetch }). runtime
-- 'plv8' (the contract's name) / 'sql': an in-database function `entrypoint`
-- (regprocedure taking one jsonb request and returning jsonb {status, headers, body}),
-- called under the caller's role like any RPC. plv8 itself is not packaged for this
-- Postgres; the entrypoint may be plpgsql, sql, or plv8 where installed.

CREATE TABLE pgr.functions (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$'),
    runtime     text NOT NULL DEFAULT 'deno' CHECK (runtime IN ('deno', 'plv8', 'sql')),
    source      text,
    entrypoint  regprocedure,
    verify_jwt  boolean NOT NULL DEFAULT true,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    env         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((runtime = 'deno' AND source IS NOT NULL) OR (runtime <> 'deno' AND entrypoint IS NOT NULL))
);
COMMENT ON TABLE pgr.functions IS 'Edge functions (POST /functions/v1/{name}); reload with POST /functions/v1/_refresh';

-- The gateway reads the catalog as its login role.
GRANT SELECT ON pgr.functions TO authenticator;
