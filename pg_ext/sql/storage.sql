-- Storage catalog: buckets and objects, with RLS deciding who reads and writes objects
-- (Supabase's helpers storage.foldername / filename / extension, so its policy recipes
-- work unchanged). Content lives either in storage.object_chunks (STORAGE_BACKEND =
-- database, written in the same transaction as the object row) or on disk
-- (STORAGE_BACKEND = disk, one file per object id).

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgstack_storage_admin') THEN
        CREATE ROLE pgstack_storage_admin NOLOGIN NOINHERIT;
    END IF;
END
$roles$;
GRANT pgstack_storage_admin TO authenticator;

CREATE TABLE storage.buckets (
    id                 text PRIMARY KEY
                       CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
                              AND id NOT IN ('public', 'sign', 'list', 'info', 'authenticated', 'upload',
                                             'render', 'move', 'copy', 'object', 'bucket')),
    name               text NOT NULL UNIQUE,
    owner              uuid,
    public             boolean NOT NULL DEFAULT false,
    file_size_limit    bigint CHECK (file_size_limit IS NULL OR file_size_limit > 0),
    allowed_mime_types text[],
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage.objects (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id        text NOT NULL REFERENCES storage.buckets (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 1024),
    owner            uuid DEFAULT auth.uid(),
    metadata         jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bucket_id, name)
);
CREATE INDEX objects_bucket_name_idx ON storage.objects (bucket_id, name text_pattern_ops);

CREATE TABLE storage.object_chunks (
    object_id uuid NOT NULL REFERENCES storage.objects (id) ON DELETE CASCADE,
    n         int NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (object_id, n)
);

CREATE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$ SELECT (string_to_array(name, '/'))[1:array_length(string_to_array(name, '/'), 1) - 1] $$;
CREATE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT (string_to_array(name, '/'))[array_length(string_to_array(name, '/'), 1)] $$;
CREATE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN storage.filename(name) LIKE '%.%'
                                         THEN reverse(split_part(reverse(storage.filename(name)), '.', 1)) ELSE '' END $$;

-- Default policies: public buckets are readable by all; otherwise owners read, write
-- and delete their own objects. service_role bypasses RLS. Replace or add policies as
-- on Supabase (which starts with none: only service_role until the project writes some).
-- Writes are owner-only: a signed-in user inserts only rows owned by itself (so a path
-- another user holds cannot be taken over: an upsert sees no row of theirs to replace
-- and the insert conflicts), and updates / deletes only its own; the anon role writes
-- nothing unless the project adds a policy for it.
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
CREATE POLICY objects_read ON storage.objects FOR SELECT TO anon, authenticated
    USING (owner = auth.uid() OR EXISTS (SELECT 1 FROM storage.buckets b WHERE b.id = bucket_id AND b.public));
CREATE POLICY objects_insert ON storage.objects FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());
CREATE POLICY objects_update ON storage.objects FOR UPDATE TO authenticated USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
CREATE POLICY objects_delete ON storage.objects FOR DELETE TO authenticated USING (owner = auth.uid());

GRANT SELECT ON storage.buckets TO anon, authenticated, service_role;
GRANT INSERT, UPDATE, DELETE ON storage.buckets TO service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON storage.objects TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text)
    TO anon, authenticated, service_role;
-- Content is reached only after the object row passed RLS as the caller.
GRANT USAGE ON SCHEMA storage TO pgstack_storage_admin;
GRANT SELECT, INSERT, DELETE ON storage.object_chunks TO pgstack_storage_admin;

-- Reads one chunk of content for the gateway, which has already read the object row
-- as the caller (so RLS allowed it).
CREATE FUNCTION storage.read_chunk(object_id uuid, n int) RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT data FROM storage.object_chunks WHERE object_chunks.object_id = read_chunk.object_id AND object_chunks.n = read_chunk.n $$;
REVOKE EXECUTE ON FUNCTION storage.read_chunk(uuid, int) FROM PUBLIC;
GRANT USAGE ON SCHEMA storage TO authenticator;
GRANT EXECUTE ON FUNCTION storage.read_chunk(uuid, int) TO authenticator;

-- Resumable uploads (TUS) in progress: one per path at a time; the received bytes are
-- staged in storage.upload_chunks (database backend) or STORAGE_ROOT/.tmp/tus-<id>
-- (disk). When the last byte arrives the object is created as the uploader's role
-- (RLS, bucket rules) exactly like a direct upload, and the staging goes away.
CREATE TABLE storage.uploads (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id     text NOT NULL REFERENCES storage.buckets (id) ON DELETE CASCADE,
    name          text NOT NULL,
    owner         text NOT NULL,            -- the creator's `sub`, or its role for keys
    token_hash    text NOT NULL,            -- SHA-256 (hex) of the upload URL's token, which
                                            -- only the creator learns (two clients with
                                            -- one API key cannot reach each other's uploads)
    upload_length bigint NOT NULL CHECK (upload_length >= 0),
    upload_offset bigint NOT NULL DEFAULT 0,
    mimetype      text NOT NULL,
    cache_control text NOT NULL,
    upsert        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bucket_id, name)
);
CREATE TABLE storage.upload_chunks (
    upload_id uuid NOT NULL REFERENCES storage.uploads (id) ON DELETE CASCADE,
    n         int NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (upload_id, n)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON storage.uploads, storage.upload_chunks TO pgstack_storage_admin;
GRANT REFERENCES ON storage.buckets TO pgstack_storage_admin;
GRANT SELECT ON storage.buckets TO pgstack_storage_admin;

-- Finishes a complete resumable upload (database backend) in one statement, inside
-- the caller's transaction and as the caller, exactly like a direct upload: the
-- bucket's rules, the object row under RLS (replacing the old one for an upsert), the
-- staged chunks moved to the object (they are 1 MiB-aligned, as object_chunks must
-- be) and the upload gone. The upload's token (its SHA-256, as stored)
-- is the capability: without it nothing is found. Returns the new object id and the
-- replaced one; a refused rule is (NULL, NULL, status, message) — RLS refusals and
-- conflicts raise as Postgres errors (42501, 23505). The ETag of a one-chunk object is
-- its MD5, as for a direct upload; of a larger one, S3's multipart form
-- (MD5 of the chunks' MD5s, "-" and the number of chunks): no byte leaves Postgres.
CREATE FUNCTION storage.finish_upload(p_upload uuid, p_token_hash text)
RETURNS TABLE (object_id uuid, replaced_id uuid, refusal int, message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller_role text := current_user;
    u           storage.uploads;
    total       bigint;
    chunks      int;
    etag        text;
    size_limit  bigint;
    allowed     text[];
    old_id      uuid;
    new_id      uuid;
BEGIN
    -- The staging is the storage admin's; the caller never reads it directly.
    PERFORM set_config('role', 'pgstack_storage_admin', true);
    SELECT * INTO u FROM storage.uploads WHERE id = p_upload AND token_hash = p_token_hash FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM set_config('role', caller_role, true);
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, 404, 'upload not found';
        RETURN;
    END IF;
    SELECT coalesce(sum(octet_length(c.data)), 0), count(*),
           CASE WHEN count(*) <= 1 THEN md5(coalesce(string_agg(c.data, ''::bytea), ''::bytea))
                ELSE md5(string_agg(decode(md5(c.data), 'hex'), ''::bytea ORDER BY c.n)) || '-' || count(*) END
      INTO total, chunks, etag
      FROM storage.upload_chunks c WHERE c.upload_id = p_upload;
    PERFORM set_config('role', caller_role, true);
    IF u.upload_offset <> u.upload_length OR total <> u.upload_length THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, 409, format('the upload has %s of %s bytes', total, u.upload_length);
        RETURN;
    END IF;
    SELECT b.file_size_limit, b.allowed_mime_types INTO size_limit, allowed FROM storage.buckets b WHERE b.id = u.bucket_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, 404, 'bucket not found';
        RETURN;
    END IF;
    IF cardinality(allowed) > 0 AND NOT (u.mimetype = ANY (allowed) OR '*/*' = ANY (allowed)
                                         OR split_part(u.mimetype, '/', 1) || '/*' = ANY (allowed)) THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, 415, format('mime type %s is not allowed in this bucket', u.mimetype);
        RETURN;
    END IF;
    IF size_limit IS NOT NULL AND total > size_limit THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, 413, 'object exceeds the bucket''s file_size_limit';
        RETURN;
    END IF;
    -- As the caller: RLS decides (the policies see the caller's role and claims).
    IF u.upsert THEN
        DELETE FROM storage.objects o WHERE o.bucket_id = u.bucket_id AND o.name = u.name RETURNING o.id INTO old_id;
    END IF;
    INSERT INTO storage.objects (bucket_id, name, metadata)
    VALUES (u.bucket_id, u.name,
            jsonb_build_object('size', total, 'mimetype', u.mimetype, 'eTag', '"' || etag || '"',
                               'cacheControl', u.cache_control, 'contentLength', total, 'lastModified', NULL))
    RETURNING id INTO new_id;
    PERFORM set_config('role', 'pgstack_storage_admin', true);
    INSERT INTO storage.object_chunks (object_id, n, data)
        SELECT new_id, c.n, c.data FROM storage.upload_chunks c WHERE c.upload_id = p_upload;
    DELETE FROM storage.uploads WHERE id = p_upload;
    PERFORM set_config('role', caller_role, true);
    RETURN QUERY SELECT new_id, old_id, 0, NULL::text;
END
$$;
REVOKE EXECUTE ON FUNCTION storage.finish_upload(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage.finish_upload(uuid, text) TO anon, authenticated, service_role;
