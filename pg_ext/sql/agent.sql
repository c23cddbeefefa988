-- The database agent's conversations (seed 002, /api/conversations): one row per
-- conversation, its messages as a JSON array. Row-level security on the owner is the
-- whole protection: the gateway runs every statement as the caller and adds nothing
-- on top. owner_id is the caller's auth.uid() (the service key's rows are 'service').

CREATE SCHEMA IF NOT EXISTS agent;
GRANT USAGE ON SCHEMA agent TO authenticated, service_role;

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
