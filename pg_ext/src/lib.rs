//! pgstack's Postgres extension (`CREATE EXTENSION pgstack`).
//!
//! Owns everything that lives in the database: the roles and schemas, the RLS
//! helpers (`auth.uid()`, ...), and later live queries, outboxes and catalogs.
//! Hand-written SQL lives in `pg_ext/sql/` and is embedded here;
//! Rust functions live in `api/`. Upgrade scripts will be `sql/pgstack--<from>--<to>.sql`
//! beside this crate's manifest (`cargo pgrx install` ships them).

::pgrx::pg_module_magic!(name, version);

mod api;

/// Runs when the library loads in a session: defines the `pgstack.*` settings.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    quiet_backtraces();
    api::settings::register();
}

/// pgrx writes a captured Rust backtrace into the DETAIL of any error that passes
/// through one of our functions (a Postgres error raised inside
/// `pgr.request_setup`, e.g. an unknown time zone or role, included), and the gateway
/// hands DETAIL to API clients. Capture follows RUST_LIB_BACKTRACE, then
/// RUST_BACKTRACE, of the server's environment: unless the operator chose
/// RUST_LIB_BACKTRACE, it is turned off here, so a RUST_BACKTRACE=1 left in the
/// environment that started Postgres shows no stack to clients.
fn quiet_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // A Postgres backend runs one thread: nothing reads the environment meanwhile.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

// Roles, schemas and RLS helpers: everything else depends on them.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// Accounts, sessions and tokens (the gateway's /auth/v1).
pgrx::extension_sql_file!("../sql/auth.sql", name = "auth", requires = ["bootstrap"]);
// DDL → NOTIFY pgrst 'reload schema' (the gateway's schema cache).
pgrx::extension_sql_file!("../sql/rest.sql", name = "rest", requires = ["bootstrap"]);
// Storage: buckets, objects (RLS), chunks for the database backend.
pgrx::extension_sql_file!("../sql/storage.sql", name = "storage", requires = ["bootstrap"]);
// Edge functions catalog.
pgrx::extension_sql_file!("../sql/functions.sql", name = "functions", requires = ["bootstrap"]);
// Webhooks: registrations, row triggers, the durable outbox.
pgrx::extension_sql_file!("../sql/webhooks.sql", name = "webhooks", requires = ["bootstrap", webhook_max_attempts, webhook_max_payload_bytes]);
// Live queries: registration, statement triggers, diffs, NOTIFY 'pgr'.
pgrx::extension_sql_file!("../sql/live.sql", name = "live", requires = ["bootstrap", check_live_query, live_query_shape, live_query_viewer_dependency]);
// Supabase Realtime: realtime.messages (private-channel policies, realtime.send),
// postgres_changes capture for the tables in the publication supabase_realtime.
pgrx::extension_sql_file!("../sql/realtime.sql", name = "realtime", requires = ["bootstrap"]);
// The SQL workbench: saved database configurations, remembered SSH host keys.
pgrx::extension_sql_file!("../sql/workbench.sql", name = "workbench", requires = ["bootstrap"]);
// The database agent: conversations (RLS on the owner), API tokens (hashed).
pgrx::extension_sql_file!("../sql/agent.sql", name = "agent", requires = ["bootstrap", "auth"]);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn set_claims(json: &str) {
        Spi::run_with_args("SELECT set_config('request.jwt.claims', $1, true)", &[json.into()]).unwrap();
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    #[pg_test]
    fn helpers_read_the_transaction_claims() {
        set_claims(r#"{"sub":"2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10","role":"authenticated","email":"jane@example.com","app_metadata":{"provider":"email"}}"#);
        assert_eq!(text("SELECT auth.uid()::text").as_deref(), Some("2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10"));
        assert_eq!(text("SELECT auth.role()").as_deref(), Some("authenticated"));
        assert_eq!(text("SELECT auth.email()").as_deref(), Some("jane@example.com"));
        assert_eq!(text("SELECT auth.jwt() -> 'app_metadata' ->> 'provider'").as_deref(), Some("email"));
    }

    #[pg_test]
    fn helpers_are_null_without_claims() {
        assert_eq!(text("SELECT auth.uid()::text"), None);
        assert_eq!(text("SELECT auth.role()"), None);
        assert_eq!(text("SELECT auth.email()"), None);
        assert_eq!(text("SELECT auth.jwt()::text"), None);
    }

    #[pg_test]
    fn a_subject_that_is_not_a_uuid_is_no_user() {
        set_claims(r#"{"sub":"not-a-uuid","role":"anon"}"#);
        assert_eq!(text("SELECT auth.uid()::text"), None);
        assert_eq!(text("SELECT auth.role()").as_deref(), Some("anon"));
    }

    #[pg_test]
    fn version_reports_the_installed_build() {
        assert_eq!(text("SELECT pgr.version()").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn live_query_shapes() {
        let shape = |q: &str| Spi::get_one_with_args::<String>("SELECT pgr.live_query_shape($1)", &[q.into()]).unwrap().unwrap();
        for q in [
            "SELECT * FROM todos WHERE done = false",
            "SELECT id, title FROM public.todos WHERE owner = 'x' AND (priority > 2 OR tags @> '{a}') AND lower(title) LIKE 'a%'",
            "SELECT id FROM todos",
        ] {
            assert_eq!(shape(q), "row", "{q}");
        }
        for q in [
            "SELECT id, count(*) FROM todos GROUP BY id",
            "SELECT t.id FROM todos t JOIN users u ON u.id = t.owner",
            "SELECT id FROM todos WHERE id IN (SELECT todo_id FROM tags)",
            "SELECT id FROM todos ORDER BY id LIMIT 10",
            "SELECT DISTINCT id FROM todos",
            "SELECT owner AS id FROM todos",
            "SELECT id, row_number() OVER () FROM todos",
            "SELECT id FROM todos UNION SELECT id FROM done",
            "WITH x AS (SELECT 1 AS id) SELECT id FROM x",
            "SELECT id FROM generate_series(1, 3) id",
        ] {
            assert_eq!(shape(q), "general", "{q}");
        }
    }

    #[pg_test]
    fn roles_exist_as_the_gateway_expects() {
        let ok = Spi::get_one::<bool>(
            "SELECT count(*) = 3 FROM pg_roles
              WHERE rolname IN ('anon','authenticated','service_role') AND NOT rolcanlogin",
        )
        .unwrap();
        assert_eq!(ok, Some(true));
        let ok = Spi::get_one::<bool>("SELECT rolcanlogin AND NOT rolinherit FROM pg_roles WHERE rolname = 'authenticator'").unwrap();
        assert_eq!(ok, Some(true));
        let bypass = Spi::get_one::<bool>("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role'").unwrap();
        assert_eq!(bypass, Some(true));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
