-- The SQL workbench's own state (the gateway's workbench/ serves the APIs):
--
-- * workbench.database_configs: saved database configurations (seed 001). The
--   password is stored encrypted by the gateway (AES-256-GCM, key from
--   WORKBENCH_SECRET_KEY) and never returned; at most one live primary; soft delete;
--   the last schema snapshot with its time and a fingerprint of the DDL it saw.
-- * workbench.known_hosts: SSH host keys remembered on first use (host_key_check
--   accept_new), shared by every gateway.
--
-- Only the gateway reaches them, inside transactions as pgstack_workbench_admin.

CREATE SCHEMA IF NOT EXISTS workbench;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgstack_workbench_admin') THEN
        CREATE ROLE pgstack_workbench_admin NOLOGIN;
    END IF;
END
$$;
GRANT pgstack_workbench_admin TO authenticator;
GRANT USAGE ON SCHEMA workbench TO pgstack_workbench_admin;

CREATE TABLE workbench.database_configs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description     text CHECK (length(description) <= 2000),
    provider        text NOT NULL DEFAULT 'postgresql' CHECK (provider = 'postgresql'),
    host            text NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
    port            integer NOT NULL DEFAULT 5432 CHECK (port BETWEEN 1 AND 65535),
    database        text NOT NULL CHECK (length(database) BETWEEN 1 AND 63),
    username        text NOT NULL CHECK (length(username) BETWEEN 1 AND 63),
    password_enc    bytea,
    ssl_mode        text NOT NULL DEFAULT 'disable',
    settings        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    is_primary      boolean NOT NULL DEFAULT false,
    is_active       boolean NOT NULL DEFAULT true,
    schema_snapshot jsonb,
    refreshed_at    timestamptz,
    ddl_fingerprint text,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
-- One live primary per owner (a user's primary never unsets another user's).
CREATE UNIQUE INDEX database_configs_one_primary ON workbench.database_configs ((coalesce(created_by, ''))) WHERE is_primary AND deleted_at IS NULL;

CREATE TABLE workbench.known_hosts (
    host        text NOT NULL,
    port        integer NOT NULL,
    fingerprint text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, port)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON workbench.database_configs, workbench.known_hosts TO pgstack_workbench_admin;
