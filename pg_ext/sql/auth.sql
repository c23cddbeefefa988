-- pgstack auth storage: users, identities, sessions, refresh tokens, one-time
-- tokens and an audit log, in schema auth (GoTrue-compatible column names so an
-- existing Supabase auth.users table can be imported; see README "Importing users").
--
-- No token is stored in clear: refresh and one-time tokens are kept as SHA-256 hex
-- digests; passwords as argon2id (or imported bcrypt) hashes.
--
-- The gateway works on these tables as role pgstack_auth_admin (granted to
-- authenticator, taken per transaction with SET LOCAL ROLE); the request roles
-- anon / authenticated see none of them.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgstack_auth_admin') THEN
        CREATE ROLE pgstack_auth_admin NOLOGIN NOINHERIT;
    END IF;
END
$roles$;
GRANT pgstack_auth_admin TO authenticator;
GRANT USAGE ON SCHEMA auth TO pgstack_auth_admin;

CREATE TABLE auth.users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    aud                 text NOT NULL DEFAULT 'authenticated',
    role                text NOT NULL DEFAULT 'authenticated'
                        CHECK (role IN ('anon', 'authenticated', 'service_role')),
    email               text CHECK (email IS NULL OR length(email) <= 320),
    encrypted_password  text,
    email_confirmed_at  timestamptz,
    -- How email_confirmed_at was set: 'email' (a link or code sent to the address was
    -- used), 'oauth' (a provider vouched for it), 'admin' (service key), 'auto'
    -- (sign-up without REQUIRE_EMAIL_VERIFICATION: nothing proven). NULL for rows
    -- imported from elsewhere. OAuth links only to addresses proven by a flow.
    email_confirmed_by  text CHECK (email_confirmed_by IN ('email', 'oauth', 'admin', 'auto')),
    -- A pending change of address (GoTrue's columns): it applies once the links sent
    -- to the new address and to the current one have both been followed.
    email_change        text,
    email_change_sent_at timestamptz,
    email_change_confirm_status smallint NOT NULL DEFAULT 0,
    phone               text,
    raw_app_meta_data   jsonb NOT NULL DEFAULT '{}',
    raw_user_meta_data  jsonb NOT NULL DEFAULT '{}',
    is_anonymous        boolean NOT NULL DEFAULT false,
    last_sign_in_at     timestamptz,
    banned_until        timestamptz,
    deleted_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- One live account per address, whatever its case.
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email))
    WHERE email IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE auth.identities (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    provider        text NOT NULL,
    provider_id     text NOT NULL,
    identity_data   jsonb NOT NULL DEFAULT '{}',
    email           text GENERATED ALWAYS AS (lower(identity_data ->> 'email')) STORED,
    last_sign_in_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_id)
);
CREATE INDEX identities_user_id_idx ON auth.identities (user_id);

CREATE TABLE auth.sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    aal         text NOT NULL DEFAULT 'aal1',
    user_agent  text,
    ip          text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    not_after   timestamptz
);
CREATE INDEX sessions_user_id_idx ON auth.sessions (user_id);

CREATE TABLE auth.refresh_tokens (
    id          bigserial PRIMARY KEY,
    token_hash  text NOT NULL UNIQUE,
    user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    session_id  uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    parent_id   bigint REFERENCES auth.refresh_tokens (id) ON DELETE SET NULL,
    revoked     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_session_id_idx ON auth.refresh_tokens (session_id, revoked);
-- Children of a token: the grace window counts them; ON DELETE SET NULL finds them.
CREATE INDEX refresh_tokens_parent_id_idx ON auth.refresh_tokens (parent_id);

-- Redirect-based sign-ins in progress: an OAuth round trip to a provider (keyed by
-- the digest of the `state` sent there) and, under PKCE, the authorization code
-- handed to the app (digest) until it is exchanged with the code_verifier at
-- POST /token?grant_type=pkce. Rows are short-lived and single use.
CREATE TABLE auth.flow_state (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider              text NOT NULL,
    state_hash            text UNIQUE,
    redirect_to           text NOT NULL,
    code_challenge        text,
    code_challenge_method text CHECK (code_challenge_method IN ('s256', 'plain')),
    auth_code_hash        text UNIQUE,
    user_id               uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL
);
CREATE INDEX flow_state_expires_idx ON auth.flow_state (expires_at);

CREATE TABLE auth.one_time_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    token_type  text NOT NULL CHECK (token_type IN
                  ('confirmation', 'recovery', 'magiclink', 'email_change', 'email_change_current',
                   'reauthentication')),
    token_hash  text NOT NULL UNIQUE,
    relates_to  text NOT NULL DEFAULT '',
    flow_id     uuid REFERENCES auth.flow_state (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    -- Wrong codes tried against this account's live tokens of this kind; at
    -- OTP_MAX_ATTEMPTS they are all spent (counted here so it holds across gateways).
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX one_time_tokens_user_idx ON auth.one_time_tokens (user_id, token_type);

CREATE TABLE auth.audit_log_entries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    action      text NOT NULL,
    actor_id    uuid,
    payload     jsonb NOT NULL DEFAULT '{}',
    ip_address  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_entries_created_idx ON auth.audit_log_entries (created_at);

-- The user object as auth-js and supabase-py read it (GoTrue's shape).
CREATE FUNCTION auth.user_json(u auth.users) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        'id', u.id,
        'aud', u.aud,
        'role', u.role,
        'email', coalesce(u.email, ''),
        'email_confirmed_at', u.email_confirmed_at,
        'confirmed_at', u.email_confirmed_at,
        'phone', coalesce(u.phone, ''),
        'last_sign_in_at', u.last_sign_in_at,
        'app_metadata', u.raw_app_meta_data,
        'user_metadata', u.raw_user_meta_data,
        'identities', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'id', i.provider_id,
                'identity_id', i.id,
                'user_id', i.user_id,
                'identity_data', i.identity_data,
                'provider', i.provider,
                'email', i.email,
                'last_sign_in_at', i.last_sign_in_at,
                'created_at', i.created_at,
                'updated_at', i.updated_at) ORDER BY i.created_at)
            FROM auth.identities i WHERE i.user_id = u.id), '[]'::jsonb),
        'is_anonymous', u.is_anonymous,
        'banned_until', u.banned_until,
        'created_at', u.created_at,
        'updated_at', u.updated_at)
    || CASE WHEN u.email_change IS NULL THEN '{}'::jsonb
            ELSE jsonb_build_object('new_email', u.email_change,
                                    'email_change_sent_at', u.email_change_sent_at) END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA auth TO pgstack_auth_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA auth TO pgstack_auth_admin;
GRANT EXECUTE ON FUNCTION auth.user_json(auth.users) TO pgstack_auth_admin, service_role;
-- The service role may read accounts (as on Supabase); the request roles may not.
GRANT SELECT ON auth.users, auth.identities TO service_role;

-- Multi-statement flows of /auth/v1 as one statement each: one round trip from the
-- gateway and one transaction (the statement's own), instead of BEGIN, SET ROLE, a
-- read, the writes, the user's JSON and COMMIT. The gateway's login role calls them;
-- no request role may (they are not in an exposed schema, and EXECUTE is not granted).

-- A session with its first refresh token (whose digest the gateway made); the
-- account's last sign-in moves to now.
CREATE FUNCTION auth._start_session(p_user uuid, p_user_agent text, p_ip text, p_refresh_hash text)
RETURNS uuid
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH s AS (INSERT INTO auth.sessions (user_id, user_agent, ip) VALUES (p_user, p_user_agent, p_ip) RETURNING id),
         r AS (INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id) SELECT p_refresh_hash, p_user, s.id FROM s),
         u AS (UPDATE auth.users SET last_sign_in_at = now() WHERE id = p_user)
    SELECT id FROM s
$$;

-- grant_type=refresh_token. Outcome:
--   'rotated': the token is revoked and p_next_hash is its child in the same session
--              (a token rotated less than p_grace_secs ago gets a sibling instead: tabs
--              refreshing at once); the account's JSON and the session come back;
--   'invalid': no such token, or its session expired, or the account is gone/banned;
--   'reused':  a token used again after the grace window: its session is revoked
--              (and the revocation audited), committed although the request fails;
--   'exhausted': the token already has 10 children (rotation and grace-window
--              siblings): refused, the session kept.
CREATE FUNCTION auth.refresh_grant(p_token_hash text, p_next_hash text, p_grace_secs float8)
RETURNS TABLE (outcome text, account jsonb, session uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT rt.id, rt.user_id, rt.session_id, rt.revoked,
           rt.revoked AND rt.updated_at > now() - make_interval(secs => p_grace_secs) AS in_grace,
           s.not_after IS NOT NULL AND s.not_after < now() AS expired,
           u.deleted_at IS NOT NULL OR coalesce(u.banned_until > now(), false) AS blocked
      INTO r
      FROM auth.refresh_tokens rt
      JOIN auth.sessions s ON s.id = rt.session_id
      JOIN auth.users u ON u.id = rt.user_id
     WHERE rt.token_hash = p_token_hash
       FOR UPDATE OF rt;
    IF NOT FOUND OR r.expired OR r.blocked THEN
        RETURN QUERY SELECT 'invalid'::text, NULL::jsonb, NULL::uuid;
        RETURN;
    END IF;
    -- Within the grace window a token yields siblings, but a bounded number: one token
    -- presented by hundreds of callers at once is not several tabs of one user.
    IF r.revoked AND r.in_grace AND (SELECT count(*) FROM auth.refresh_tokens c WHERE c.parent_id = r.id) >= 10 THEN
        RETURN QUERY SELECT 'exhausted'::text, NULL::jsonb, NULL::uuid;
        RETURN;
    END IF;
    IF r.revoked AND NOT r.in_grace THEN
        DELETE FROM auth.sessions WHERE id = r.session_id;
        INSERT INTO auth.audit_log_entries (action, payload) VALUES ('token_revoked', '{"reason": "refresh token reuse"}');
        RETURN QUERY SELECT 'reused'::text, NULL::jsonb, NULL::uuid;
        RETURN;
    END IF;
    UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE id = r.id AND NOT revoked;
    UPDATE auth.sessions SET refreshed_at = now(), updated_at = now() WHERE id = r.session_id;
    INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id, parent_id) VALUES (p_next_hash, r.user_id, r.session_id, r.id);
    -- Always one row (the account may have been deleted meanwhile: NULL).
    RETURN QUERY SELECT 'rotated'::text, (SELECT auth.user_json(u) FROM auth.users u WHERE u.id = r.user_id AND u.deleted_at IS NULL), r.session_id;
END
$$;

-- grant_type=pkce: redeems an authorization code (by digest) with the app's verifier,
-- given in both forms a challenge can take (plain, and S256 computed by the gateway),
-- and starts a session. The code is spent whatever the outcome. Outcome 'session'
-- (with the account's JSON, the session and the provider), 'not_found', 'expired',
-- 'bad_verifier', 'user_not_found' (deleted meanwhile) or 'banned'.
CREATE FUNCTION auth.pkce_grant(p_code_hash text, p_verifier text, p_verifier_s256 text, p_refresh_hash text, p_user_agent text, p_ip text)
RETURNS TABLE (outcome text, account jsonb, session uuid, provider text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    sid uuid;
    expected text;
    gone boolean;
    banned boolean;
BEGIN
    DELETE FROM auth.flow_state WHERE auth_code_hash = p_code_hash
        RETURNING user_id, flow_state.provider AS prov, code_challenge, code_challenge_method, expires_at > now() AS live INTO f;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    IF NOT f.live THEN
        RETURN QUERY SELECT 'expired'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    IF f.user_id IS NULL OR f.code_challenge IS NULL OR f.code_challenge_method IS NULL THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    expected := CASE f.code_challenge_method WHEN 'plain' THEN p_verifier ELSE p_verifier_s256 END;
    IF f.code_challenge IS DISTINCT FROM expected THEN
        RETURN QUERY SELECT 'bad_verifier'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    -- The account as it is now: gone, or banned, gets no session (the code is spent).
    SELECT u.deleted_at IS NOT NULL, coalesce(u.banned_until > now(), false) INTO gone, banned
      FROM auth.users u WHERE u.id = f.user_id;
    IF NOT FOUND OR gone THEN
        RETURN QUERY SELECT 'user_not_found'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    IF banned THEN
        RETURN QUERY SELECT 'banned'::text, NULL::jsonb, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    sid := auth._start_session(f.user_id, p_user_agent, p_ip, p_refresh_hash);
    INSERT INTO auth.audit_log_entries (action, actor_id, payload, ip_address)
        VALUES ('login', f.user_id, jsonb_build_object('provider', f.prov, 'grant', 'pkce'), coalesce(p_ip, ''));
    RETURN QUERY SELECT 'session'::text, (SELECT auth.user_json(u) FROM auth.users u WHERE u.id = f.user_id), sid, f.prov;
END
$$;

REVOKE EXECUTE ON FUNCTION auth._start_session(uuid, text, text, text), auth.refresh_grant(text, text, float8),
    auth.pkce_grant(text, text, text, text, text, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA auth TO authenticator;
GRANT EXECUTE ON FUNCTION auth.refresh_grant(text, text, float8), auth.pkce_grant(text, text, text, text, text, text) TO authenticator;
