-- The database agent's conversations (seed 002, /api/conversations): one row per
-- conversation, its messages as a JSON array. Row-level security on the owner is the
-- whole protection: the gateway runs every statement as the caller and adds nothing
-- on top. owner_id is the caller's auth.uid() (the service key's rows are 'service').

CREATE SCHEMA IF NOT EXISTS agent;
GRANT USAGE ON SCHEMA agent TO authenticated, service_role, authenticator;

CREATE TABLE agent.conversations (
    id          text PRIMARY KEY DEFAULT 'conv_' || replace(gen_random_uuid()::text, '-', ''),
    owner_id    text NOT NULL DEFAULT coalesce(auth.uid()::text, 'service'),
    username    text CHECK (length(username) <= 320),
    title       text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
    provider    text CHECK (length(provider) <= 100),
    model       text CHECK (length(model) <= 200),
    connection  text CHECK (length(connection) <= 200),
    messages    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(messages) = 'array'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_owner_recent ON agent.conversations (owner_id, updated_at DESC);

ALTER TABLE agent.conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY conversations_owner ON agent.conversations FOR ALL TO authenticated
    USING (owner_id = auth.uid()::text) WITH CHECK (owner_id = auth.uid()::text);
GRANT SELECT, INSERT, UPDATE, DELETE ON agent.conversations TO authenticated, service_role;

-- API tokens for unattended agents: created by an admin (the service key), stored as
-- the SHA-256 of the token (the token itself is shown once), optionally bound to one
-- database (the agent's `default` or a saved workbench configuration's id) and to
-- a user whose claims it carries. Only service_role reads them: the gateway looks a
-- token up with its own login, never as the caller.
CREATE TABLE agent.api_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    role        text NOT NULL DEFAULT 'authenticated' CHECK (role IN ('authenticated', 'service_role')),
    user_id     uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    database    text CHECK (length(database) BETWEEN 1 AND 200),
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
ALTER TABLE agent.api_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_tokens_service ON agent.api_tokens FOR ALL TO service_role USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON agent.api_tokens TO service_role;

-- The gateway's one look-up of a presented token (its SHA-256): one round trip on its
-- own login, returning the live token's grants and its user's e-mail, and noting
-- when it was last used (at most once a minute).
CREATE FUNCTION agent.api_token(p_hash bytea)
RETURNS TABLE (id uuid, role text, user_id uuid, database text, email text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH live AS (
        SELECT t.id, t.role, t.user_id, t.database, u.email, t.last_used_at
        FROM agent.api_tokens t LEFT JOIN auth.users u ON u.id = t.user_id
        WHERE t.token_hash = p_hash AND (t.expires_at IS NULL OR t.expires_at > now())
          -- A token acting for a user lives only as long as that user may sign in.
          AND (t.user_id IS NULL OR (u.id IS NOT NULL AND u.deleted_at IS NULL AND (u.banned_until IS NULL OR u.banned_until <= now())))
    ), touched AS (
        UPDATE agent.api_tokens t SET last_used_at = now()
        FROM live WHERE t.id = live.id AND (live.last_used_at IS NULL OR live.last_used_at < now() - interval '1 minute')
    )
    SELECT id, role, user_id, database, email FROM live
$$;
REVOKE ALL ON FUNCTION agent.api_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent.api_token(bytea) TO authenticator, service_role;
