//! Issue 2: CREATE EXTENSION pgstack creates the roles, schemas and RLS helpers,
//! and the helpers read what a transaction set in request.jwt.claims.

use pgstack_tests::{connect, TestCluster};

#[tokio::test]
async fn roles_schemas_and_grants_exist() {
    let tc = TestCluster::start().await.unwrap();
    let db = tc.superuser().await.unwrap();

    let rows = db
        .query(
            "SELECT rolname, rolcanlogin, rolinherit, rolbypassrls FROM pg_roles
              WHERE rolname IN ('anon','authenticated','service_role','authenticator') ORDER BY rolname",
            &[],
        )
        .await
        .unwrap();
    let roles: Vec<(String, bool, bool, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        roles,
        vec![
            ("anon".into(), false, false, false),
            ("authenticated".into(), false, false, false),
            ("authenticator".into(), true, false, false),
            ("service_role".into(), false, false, true),
        ]
    );
    for role in ["anon", "authenticated", "service_role"] {
        let member: bool = db.query_one("SELECT pg_has_role('authenticator', $1, 'MEMBER')", &[&role]).await.unwrap().get(0);
        assert!(member, "authenticator is not a member of {role}");
        let usage: bool = db.query_one("SELECT bool_and(has_schema_privilege($1, s, 'USAGE')) FROM unnest(array['auth','storage','pgr']) s", &[&role]).await.unwrap().get(0);
        assert!(usage, "{role} lacks USAGE on the pgstack schemas");
    }
    let owned: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
              JOIN pg_namespace n ON n.oid = d.objid AND d.classid = 'pg_namespace'::regclass
             WHERE e.extname = 'pgstack' AND n.nspname IN ('auth','storage','pgr')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 3, "schemas auth, storage, pgr belong to the extension");
    let v: String = db.query_one("SELECT pgr.version()", &[]).await.unwrap().get(0);
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn helpers_read_transaction_local_claims_as_each_role() {
    let tc = TestCluster::start().await.unwrap();
    // Exactly what the gateway does: log in as authenticator, then per transaction
    // switch role and set the claims, both transaction-locally.
    let mut db = connect(&tc.authenticator_url()).await.unwrap();
    let uid = "2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10";
    let claims = serde_json::json!({"sub": uid, "role": "authenticated", "email": "jane@example.com", "aud": "authenticated"}).to_string();

    let tx = db.transaction().await.unwrap();
    tx.query_one("SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)", &[&claims]).await.unwrap();
    let row = tx.query_one("SELECT auth.uid()::text, auth.role(), auth.email(), auth.jwt()->>'aud', current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(uid));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("authenticated"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("jane@example.com"));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("authenticated"));
    assert_eq!(row.get::<_, String>(4), "authenticated");
    tx.commit().await.unwrap();

    // After the transaction nothing is left behind on the pooled connection.
    let row = db.query_one("SELECT coalesce(current_setting('request.jwt.claims', true), ''), current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "");
    assert_eq!(row.get::<_, String>(1), "authenticator");

    // With a role but no claims, every helper is NULL.
    let tx = db.transaction().await.unwrap();
    tx.query_one("SELECT set_config('role', 'authenticated', true)", &[]).await.unwrap();
    let row = tx.query_one("SELECT auth.uid()::text, auth.role(), auth.email(), auth.jwt()::text", &[]).await.unwrap();
    for i in 0..4 {
        assert_eq!(row.get::<_, Option<String>>(i), None, "column {i} should be NULL without claims");
    }
    tx.rollback().await.unwrap();

    // anon key claims: no subject, so auth.uid() is NULL and policies comparing it are false.
    let tx = db.transaction().await.unwrap();
    tx.query_one("SELECT set_config('role', 'anon', true), set_config('request.jwt.claims', '{\"role\":\"anon\"}', true)", &[]).await.unwrap();
    let row = tx.query_one("SELECT auth.uid()::text, auth.role()", &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("anon"));
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn rls_policies_written_for_supabase_work_unchanged() {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.notes (id serial PRIMARY KEY, owner uuid NOT NULL, body text);
         ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_notes ON public.notes FOR ALL TO authenticated
             USING (auth.uid() = owner) WITH CHECK (auth.uid() = owner);
         GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
         GRANT ALL ON public.notes TO anon, authenticated, service_role;
         GRANT USAGE ON SEQUENCE public.notes_id_seq TO authenticated, service_role;
         INSERT INTO public.notes (owner, body) VALUES
           ('11111111-1111-1111-1111-111111111111', 'a'), ('22222222-2222-2222-2222-222222222222', 'b');",
    )
    .await
    .unwrap();

    let mut db = connect(&tc.authenticator_url()).await.unwrap();
    async fn visible(db: &mut tokio_postgres::Client, role: &str, claims: &str) -> Vec<String> {
        let tx = db.transaction().await.unwrap();
        tx.query_one("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", &[&role, &claims]).await.unwrap();
        let rows = tx.query("SELECT body FROM public.notes ORDER BY id", &[]).await.unwrap();
        tx.rollback().await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
    let user_a = r#"{"sub":"11111111-1111-1111-1111-111111111111","role":"authenticated"}"#;
    assert_eq!(visible(&mut db, "authenticated", user_a).await, vec!["a"]);
    assert!(visible(&mut db, "anon", r#"{"role":"anon"}"#).await.is_empty());
    assert_eq!(visible(&mut db, "service_role", r#"{"role":"service_role"}"#).await, vec!["a", "b"]);

    // authenticator alone (NOINHERIT) holds none of the roles' privileges.
    let err = db.query("SELECT * FROM public.notes", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
}
