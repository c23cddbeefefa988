-- pgstack extension bootstrap: roles, schemas and the RLS helpers.
-- Runs first in `CREATE EXTENSION pgstack` (see pg_ext/src/lib.rs).
--
-- The helpers follow Supabase's contract: the gateway sets, transaction-locally,
--   set_config('request.jwt.claims', '<the verified JWT payload as JSON>', true)
-- and policies call auth.uid() / auth.role() / auth.email() / auth.jwt().

-- Roles are cluster-wide: a second database that creates the extension reuses them.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    -- The gateway logs in as authenticator and switches to one of the three per
    -- transaction. NOINHERIT: on its own it holds none of their privileges.
    -- Its password is set by `pgstack install` / `pgstack dev`, never here.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
END
$roles$;

GRANT anon, authenticated, service_role TO authenticator;

-- Statement timeouts of the request roles, as Supabase sets them: a public key's
-- query cannot hold a connection for long. The gateway applies a role's
-- `statement_timeout` to every request that runs as it (role settings only take
-- effect at login otherwise). A setting the project already chose is kept.
DO $timeouts$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES ('anon', '3s'), ('authenticated', '8s')) AS t(role, timeout) LOOP
        IF NOT EXISTS (
            SELECT FROM pg_db_role_setting s
              JOIN pg_roles x ON x.oid = s.setrole
             WHERE x.rolname = r.role AND s.setdatabase = 0
               AND EXISTS (SELECT FROM unnest(s.setconfig) c WHERE c LIKE 'statement\_timeout=%')
        ) THEN
            EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', r.role, r.timeout);
        END IF;
    END LOOP;
END
$timeouts$;

CREATE SCHEMA auth;
CREATE SCHEMA storage;
CREATE SCHEMA pgr;
COMMENT ON SCHEMA auth IS 'pgstack: accounts, sessions and the RLS helpers auth.uid(), auth.role(), auth.email(), auth.jwt()';
COMMENT ON SCHEMA storage IS 'pgstack: buckets and objects';
COMMENT ON SCHEMA pgr IS 'pgstack: live queries (pgr.subscribe) and runtime helpers';

-- Policies run as the request's role, so those roles must reach the helpers.
GRANT USAGE ON SCHEMA auth, storage, pgr TO anon, authenticated, service_role;

-- The verified JWT payload of the current request, or NULL outside a request.
-- request.jwt.claim (singular) is read first, as Supabase does, for older setups.
CREATE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

-- The user id (claim `sub`), or NULL when unset or not a UUID (anon / service keys
-- have no subject), so a policy `auth.uid() = owner` is simply false for them.
CREATE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN s ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
                THEN s::uuid END
    FROM (SELECT coalesce(
              nullif(current_setting('request.jwt.claim.sub', true), ''),
              auth.jwt() ->> 'sub') AS s) AS claim
$$;

-- The role claim (anon, authenticated, service_role), or NULL outside a request.
CREATE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        auth.jwt() ->> 'role')
$$;

-- The email claim, or NULL.
CREATE FUNCTION auth.email() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        auth.jwt() ->> 'email')
$$;

COMMENT ON FUNCTION auth.jwt() IS 'The current request''s JWT claims (request.jwt.claims), NULL when unset';
COMMENT ON FUNCTION auth.uid() IS 'The current user''s id (claim sub), NULL when unset or not a UUID';
COMMENT ON FUNCTION auth.role() IS 'The current request''s role claim, NULL when unset';
COMMENT ON FUNCTION auth.email() IS 'The current user''s email claim, NULL when unset';

GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role(), auth.email()
    TO anon, authenticated, service_role;

-- The demo table of POST /api/demo (dev-only endpoint), kept out of public.
CREATE TABLE pgr.demo (
    id         serial PRIMARY KEY,
    label      text NOT NULL,
    value      bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON pgr.demo TO anon, authenticated;
GRANT ALL ON pgr.demo TO service_role;
GRANT USAGE ON SEQUENCE pgr.demo_id_seq TO service_role;
