//! Schema cache: the tables, views, columns and keys of the exposed schemas, read
//! once from pg_catalog and swapped atomically on reload. Identifiers in requests are
//! looked up here before they reach SQL; nothing unknown is ever quoted into a query.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::error::DbError;

/// One column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Type as `format_type` prints it (used for casts).
    pub type_name: String,
    /// For a base or enum type (not an array, not json): its qualified name (no
    /// modifier), to cast a body value's text to (a single-object insert's `VALUES`).
    pub scalar: Option<String>,
    /// Accepts NULL.
    pub nullable: bool,
    /// Has a default (or is identity / serial).
    pub has_default: bool,
    /// Generated column (never written).
    pub generated: bool,
    /// The default as SQL, from the catalog (`nextval(...)`, `now()`), if any.
    pub default_sql: Option<String>,
}

/// A table or view.
#[derive(Debug, Clone)]
pub struct Table {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// True for views and materialized views.
    pub is_view: bool,
    /// A plain table without triggers of its own or rules (its writes cannot set
    /// response.headers / response.status).
    pub quiet: bool,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Primary-key columns (empty for views and tables without one).
    pub primary_key: Vec<String>,
    /// `pg_relation_is_updatable`: 4 UPDATE, 8 INSERT, 16 DELETE.
    pub writable: i32,
}

impl Table {
    /// The methods PostgREST's OPTIONS lists for this relation (its `Allow` header).
    pub fn allow(&self) -> String {
        let (update, insert, delete) = (self.writable & 4 != 0, self.writable & 8 != 0, self.writable & 16 != 0);
        let mut m = vec!["OPTIONS", "GET", "HEAD"];
        if insert {
            m.push("POST");
        }
        if insert && update && !self.primary_key.is_empty() {
            m.push("PUT");
        }
        if update {
            m.push("PATCH");
        }
        if delete {
            m.push("DELETE");
        }
        m.join(",")
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A function callable over RPC.
#[derive(Debug, Clone)]
pub struct Function {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Named input arguments (name, type).
    pub args: Vec<(String, String)>,
    /// Arguments with defaults (the last `n` of `args`).
    pub n_defaults: usize,
    /// Returns a set.
    pub returns_set: bool,
    /// Returns a scalar (not a composite / table type).
    pub returns_scalar: bool,
    /// Volatility: 'i', 's' or 'v'.
    pub volatility: char,
    /// Result columns (composite / RETURNS TABLE), as a table for filtering.
    pub result: Option<Table>,
    /// RETURNS void (answered 204).
    pub returns_void: bool,
    /// The last argument is VARIADIC (an array of the element type).
    pub variadic: bool,
    /// The table or view whose row type it returns (its results embed like it).
    pub returns_relation: Option<(String, String)>,
    /// A set-returning function declared `ROWS 1` (as a computed relationship:
    /// to one row, as PostgREST reads it).
    pub rows_one: bool,
    /// Returns one value of a domain named after a media type: answered as it.
    pub media: Option<String>,
    /// That domain is over bytea (the value's bytes are the body).
    pub media_bytea: bool,
}

impl Function {
    /// Whether a call naming `given` arguments fits this signature: every
    /// argument without a default is given and every given one exists.
    pub fn accepts(&self, given: &[&str]) -> bool {
        let required = self.args.len() - self.n_defaults.min(self.args.len());
        self.args[..required].iter().all(|(n, _)| given.contains(&n.as_str())) && given.iter().all(|g| self.args.iter().any(|(n, _)| n == g))
    }
}

/// A foreign key: `table(columns)` references `ref_table(ref_columns)`.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    /// Constraint name (usable as an embedding hint).
    pub name: String,
    /// Referencing (schema, table).
    pub table: (String, String),
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced (schema, table).
    pub ref_table: (String, String),
    /// Referenced columns.
    pub ref_columns: Vec<String>,
    /// The referencing columns are unique: the child side is one-to-one.
    pub unique: bool,
}

/// Everything cached, keyed by (schema, name).
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// Exposed schemas, the first being the default.
    pub schemas: Vec<String>,
    /// Tables and views.
    pub tables: HashMap<(String, String), Table>,
    /// Functions with every overload, in catalog order.
    pub functions: HashMap<(String, String), Vec<Function>>,
    /// Foreign keys, for embedding.
    pub foreign_keys: Vec<ForeignKey>,
    /// `ALTER ROLE r SET statement_timeout = ...` per role (this database's setting
    /// wins over the role-wide one). Role settings apply at login only, so the
    /// gateway applies them itself when a request switches to the role.
    pub role_timeouts: HashMap<String, String>,
    /// Types a `select=col::type` cast may name: type name → its quoted, qualified
    /// name (`"pg_catalog"."int4"`). pg_catalog first, then the exposed schemas.
    pub types: HashMap<String, String>,
    /// Data representations (PostgREST): a domain's casts by function, keyed by its
    /// type name as columns print it.
    pub reps: HashMap<String, Representation>,
    /// The extension's `pgr.request_setup` is there and the gateway may call it:
    /// requests are set up by that one call instead of the `set_config` statement.
    pub request_setup: bool,
}

/// The functions of a domain's implicit casts to and from json / text, each a
/// qualified, quoted name from the catalog.
#[derive(Debug, Clone, Default)]
pub struct Representation {
    /// domain → json: how a value of the domain is rendered.
    pub to_json: Option<String>,
    /// text → domain: how a filter's value is read.
    pub from_text: Option<String>,
    /// json → domain: how a written value is read.
    pub from_json: Option<String>,
}

impl SchemaCache {
    /// The representation of values of type `type_name`, if its domain has one.
    pub fn rep(&self, type_name: &str) -> Option<&Representation> {
        if self.reps.is_empty() {
            return None;
        }
        self.reps.get(type_name)
    }
    /// A table or view of `schema`.
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_owned(), name.to_owned()))
    }
    /// A function of `schema` (its first overload).
    pub fn function(&self, schema: &str, name: &str) -> Option<&Function> {
        self.functions.get(&(schema.to_owned(), name.to_owned())).and_then(|v| v.first())
    }
    /// Every overload of a function of `schema`.
    pub fn overloads(&self, schema: &str, name: &str) -> &[Function] {
        self.functions.get(&(schema.to_owned(), name.to_owned())).map(Vec::as_slice).unwrap_or_default()
    }

    /// The SQL text of a cast to `name` (a `select=` cast as the request wrote it:
    /// `text`, `integer`, `double precision`, `int4[]`), or None when no such type
    /// exists. Only the catalog's own spelling, quoted, reaches SQL.
    pub fn cast_type(&self, name: &str) -> Option<String> {
        let (base, array) = match name.trim().strip_suffix("[]") {
            Some(b) => (b.trim_end(), true),
            None => (name.trim(), false),
        };
        let folded = base.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let canonical = match folded.as_str() {
            "integer" | "int" => "int4",
            "smallint" => "int2",
            "bigint" => "int8",
            "real" => "float4",
            "double precision" | "float" => "float8",
            "boolean" => "bool",
            "decimal" => "numeric",
            "character varying" => "varchar",
            "character" | "char" => "bpchar",
            "timestamp without time zone" => "timestamp",
            "timestamp with time zone" => "timestamptz",
            "time without time zone" => "time",
            "time with time zone" => "timetz",
            "bit varying" => "varbit",
            other => other,
        };
        let t = self.types.get(canonical)?;
        Some(if array { format!("{t}[]") } else { t.clone() })
    }

    /// Reads the catalog for `schemas`.
    pub async fn load(client: &Client, schemas: &[String]) -> Result<SchemaCache, tokio_postgres::Error> {
        let mut cache = SchemaCache { schemas: schemas.to_vec(), ..Default::default() };
        let rows = client.query(include_str!("schema_sql/tables.sql"), &[&schemas]).await?;
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let cols: serde_json::Value = r.get(3);
            let columns = cols
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| Column {
                            name: c["name"].as_str().unwrap_or_default().to_owned(),
                            type_name: c["type"].as_str().unwrap_or("text").to_owned(),
                            scalar: c["scalar"].as_str().map(str::to_owned),
                            nullable: c["nullable"].as_bool().unwrap_or(true),
                            has_default: c["has_default"].as_bool().unwrap_or(false),
                            generated: c["generated"].as_bool().unwrap_or(false),
                            default_sql: c["default"].as_str().map(str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let pk: Vec<String> = r.get(4);
            cache.tables.insert((schema.clone(), name.clone()), Table { schema, name, is_view: r.get(2), quiet: r.get(6), columns, primary_key: pk, writable: r.get(5) });
        }
        let mut keys = Vec::new();
        for r in client.query(include_str!("schema_sql/foreign_keys.sql"), &[&schemas]).await? {
            keys.push(ForeignKey { name: r.get(0), table: (r.get(1), r.get(2)), columns: r.get(3), ref_table: (r.get(4), r.get(5)), ref_columns: r.get(6), unique: r.get(7) });
        }
        let mut views = ViewMap::default();
        for r in client.query(include_str!("schema_sql/view_columns.sql"), &[&schemas]).await? {
            let (view, base): ((String, String), (String, String)) = ((r.get(0), r.get(1)), (r.get(3), r.get(4)));
            let (view_col, base_col): (String, String) = (r.get(2), r.get(5));
            let entry = views.entry(base).or_default();
            match entry.iter_mut().find(|(v, _)| *v == view) {
                Some((_, cols)) => {
                    cols.entry(base_col).or_insert(view_col);
                }
                None => entry.push((view, HashMap::from([(base_col, view_col)]))),
            }
        }
        infer_view_keys(&mut cache.tables, &views);
        cache.foreign_keys = through_views(keys, &views);
        let timeouts = client
            .query(
                "SELECT r.rolname::text, split_part(c, '=', 2)
                   FROM pg_db_role_setting s
                   JOIN pg_roles r ON r.oid = s.setrole
                   CROSS JOIN LATERAL unnest(s.setconfig) AS c
                  WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
                    AND c LIKE 'statement\\_timeout=%'
                  ORDER BY s.setdatabase",
                &[],
            )
            .await?;
        for r in timeouts {
            cache.role_timeouts.insert(r.get(0), r.get(1));
        }
        // Defined, non-pseudo types; pg_catalog's win over same-named ones elsewhere.
        let types = client
            .query(
                "SELECT t.typname::text, n.nspname::text
                   FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                  WHERE t.typisdefined AND t.typtype <> 'p'
                    AND (n.nspname = 'pg_catalog' OR n.nspname = ANY($1))
                  ORDER BY n.nspname <> 'pg_catalog', array_position($1, n.nspname::text)",
                &[&schemas],
            )
            .await?;
        for r in types {
            let (name, schema): (String, String) = (r.get(0), r.get(1));
            cache.types.entry(name.to_lowercase()).or_insert_with(|| crate::db::sql::qualified(&schema, &name));
        }
        for r in client.query(include_str!("schema_sql/representations.sql"), &[]).await? {
            let (source, target, func, from_domain): (String, String, String, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
            if from_domain {
                if target == "json" {
                    cache.reps.entry(source).or_default().to_json = Some(func);
                }
            } else if source == "text" {
                cache.reps.entry(target).or_default().from_text = Some(func);
            } else {
                cache.reps.entry(target).or_default().from_json = Some(func);
            }
        }
        cache.request_setup = client.query_one(super::caller::SETUP_CALL_PRESENT, &[]).await?.get::<_, Option<bool>>(0).unwrap_or(false);
        let rows = client.query(include_str!("schema_sql/functions.sql"), &[&schemas]).await?;
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let names: Vec<String> = r.get(2);
            let types: Vec<String> = r.get(3);
            let f = Function {
                schema: schema.clone(),
                name: name.clone(),
                args: names.into_iter().zip(types).collect(),
                n_defaults: r.get::<_, i16>(4) as usize,
                returns_set: r.get(5),
                returns_scalar: r.get(6),
                volatility: r.get::<_, i8>(7) as u8 as char,
                returns_void: r.get(8),
                result: result_table(&schema, &name, r.get(9)),
                variadic: r.get(10),
                returns_relation: r.get::<_, Option<Vec<String>>>(11).and_then(|v| match <[String; 2]>::try_from(v) {
                    Ok([schema, name]) => Some((schema, name)),
                    Err(_) => None,
                }),
                rows_one: r.get(12),
                media: r.get(13),
                media_bytea: r.get(14),
            };
            cache.functions.entry((schema, name)).or_default().push(f);
        }
        Ok(cache)
    }
}

/// Base table → the views over it, each with its base column → view column map.
type ViewMap = HashMap<(String, String), Vec<((String, String), HashMap<String, String>)>>;

/// A view that shows all of a base table's primary-key columns has that key too
/// (PostgREST infers view keys from the view's column dependencies): it can then be
/// a junction, take PUT and upserts, and answer Location.
fn infer_view_keys(tables: &mut HashMap<(String, String), Table>, views: &ViewMap) {
    for (base, over) in views {
        let Some(pk) = tables.get(base).map(|t| t.primary_key.clone()).filter(|pk| !pk.is_empty()) else { continue };
        for (view, map) in over {
            let Some(mapped) = pk.iter().map(|c| map.get(c).cloned()).collect::<Option<Vec<String>>>() else { continue };
            if let Some(v) = tables.get_mut(view).filter(|v| v.primary_key.is_empty()) {
                v.primary_key = mapped;
            }
        }
    }
}

/// Every key between tables also relates the views over them (PostgREST's view
/// relationships): when a view shows all of a key's columns, the key is repeated
/// between every pair of {table, its views} on both sides, under the same name.
fn through_views(keys: Vec<ForeignKey>, views: &ViewMap) -> Vec<ForeignKey> {
    let sources = |table: &(String, String), cols: &[String]| -> Vec<((String, String), Vec<String>)> {
        let mut out = vec![(table.clone(), cols.to_vec())];
        for (view, map) in views.get(table).into_iter().flatten() {
            if let Some(mapped) = cols.iter().map(|c| map.get(c).cloned()).collect::<Option<Vec<String>>>() {
                out.push((view.clone(), mapped));
            }
        }
        out
    };
    let mut out = Vec::new();
    for fk in keys {
        let left = sources(&fk.table, &fk.columns);
        let right = sources(&fk.ref_table, &fk.ref_columns);
        for (lt, lc) in &left {
            for (rt, rc) in &right {
                if *lt == fk.table && *rt == fk.ref_table {
                    continue;
                }
                out.push(ForeignKey { name: fk.name.clone(), table: lt.clone(), columns: lc.clone(), ref_table: rt.clone(), ref_columns: rc.clone(), unique: fk.unique });
            }
        }
        out.push(fk);
    }
    out
}

fn result_table(schema: &str, name: &str, cols: serde_json::Value) -> Option<Table> {
    let cols = cols.as_array()?;
    if cols.is_empty() {
        return None;
    }
    Some(Table {
        schema: schema.to_owned(),
        name: name.to_owned(),
        is_view: true,
        quiet: false,
        columns: cols
            .iter()
            .map(|c| Column {
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                type_name: c["type"].as_str().unwrap_or("text").to_owned(),
                scalar: None,
                nullable: true,
                has_default: false,
                generated: false,
                default_sql: None,
            })
            .collect(),
        primary_key: Vec::new(),
        writable: 0,
    })
}

/// The shared, swappable cache. Reloads can overlap (a DDL notification and
/// POST /api/catalog/refresh): each takes a ticket before reading the catalog, and a
/// reload that finishes after a later-started one does not replace its newer snapshot.
#[derive(Clone, Default)]
pub struct CacheHandle(Arc<CacheSlot>);

#[derive(Default)]
struct CacheSlot {
    current: std::sync::RwLock<(u64, Arc<SchemaCache>)>,
    tickets: std::sync::atomic::AtomicU64,
    /// Whether a snapshot was loaded at least once.
    loaded: std::sync::atomic::AtomicBool,
    /// The current snapshot's `request_setup`, read without its lock.
    request_setup: std::sync::atomic::AtomicBool,
}

impl CacheHandle {
    /// Reads the catalog of `schemas` and installs it (unless a later reload won).
    pub async fn reload(&self, pool: &super::fair::FairPool<deadpool_postgres::Pool>, schemas: &[String]) -> Result<(), DbError> {
        let client = pool.get().await?;
        let ticket = self.ticket();
        let cache = SchemaCache::load(&client, schemas).await?;
        tracing::info!(tables = cache.tables.len(), functions = cache.functions.len(), "schema cache loaded");
        if !self.set(ticket, cache) {
            tracing::debug!("a later schema cache reload already finished");
        }
        self.0.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
    /// The current snapshot, loading it first if it never was (e.g. Postgres was
    /// down at start).
    pub async fn ensure(&self, pool: &super::fair::FairPool<deadpool_postgres::Pool>, schemas: &[String]) -> Result<Arc<SchemaCache>, DbError> {
        if !self.0.loaded.load(std::sync::atomic::Ordering::Acquire) {
            self.reload(pool, schemas).await?;
        }
        Ok(self.get())
    }
    /// How a request's transaction is set up as its caller ([`super::caller::SETUP_CALL`]
    /// when the installed extension has the function, else [`super::caller::SETUP`]);
    /// both take [`super::caller::setup_params`].
    pub fn setup_sql(&self) -> &'static str {
        if self.0.request_setup.load(std::sync::atomic::Ordering::Relaxed) {
            super::caller::SETUP_CALL
        } else {
            super::caller::SETUP
        }
    }
    /// Stops using [`super::caller::SETUP_CALL`] until a reload finds it callable again
    /// (it failed: dropped or revoked since the last reload).
    pub fn forget_setup_call(&self) {
        self.0.request_setup.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    /// The current snapshot.
    pub fn get(&self) -> Arc<SchemaCache> {
        self.0.current.read().map(|g| g.1.clone()).unwrap_or_default()
    }
    /// A ticket for a reload about to read the catalog (later tickets win).
    pub fn ticket(&self) -> u64 {
        self.0.tickets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
    /// Installs a snapshot read under `ticket`, unless a reload that started later
    /// already installed its own. True if installed.
    pub fn set(&self, ticket: u64, cache: SchemaCache) -> bool {
        match self.0.current.write() {
            Ok(mut g) if g.0 < ticket => {
                self.0.request_setup.store(cache.request_setup, std::sync::atomic::Ordering::Relaxed);
                *g = (ticket, Arc::new(cache));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_that_started_earlier_never_replaces_a_later_one() {
        let h = CacheHandle::default();
        let (early, late) = (h.ticket(), h.ticket());
        let named = |s: &str| SchemaCache { schemas: vec![s.to_owned()], ..Default::default() };
        assert!(h.set(late, named("late")));
        assert!(!h.set(early, named("early")), "the earlier reload finished last");
        assert_eq!(h.get().schemas, vec!["late".to_owned()]);
        let next = h.ticket();
        assert!(h.set(next, named("next")));
        assert_eq!(h.get().schemas, vec!["next".to_owned()]);
    }
}

#[cfg(test)]
mod cast_tests {
    use super::*;

    #[test]
    fn casts_resolve_to_quoted_catalog_names_only() {
        let mut c = SchemaCache::default();
        for (n, s) in [("int4", "pg_catalog"), ("_int4", "pg_catalog"), ("float8", "pg_catalog"), ("text", "pg_catalog"), ("mood", "public")] {
            c.types.insert(n.into(), crate::db::sql::qualified(s, n));
        }
        assert_eq!(c.cast_type("integer").as_deref(), Some(r#""pg_catalog"."int4""#));
        assert_eq!(c.cast_type("INT4").as_deref(), Some(r#""pg_catalog"."int4""#));
        assert_eq!(c.cast_type("int4[]").as_deref(), Some(r#""pg_catalog"."int4"[]"#));
        assert_eq!(c.cast_type("double   precision").as_deref(), Some(r#""pg_catalog"."float8""#));
        assert_eq!(c.cast_type("mood").as_deref(), Some(r#""public"."mood""#));
        for bad in ["text FROM notes UNION SELECT session_user", "text)", "nope", ""] {
            assert_eq!(c.cast_type(bad), None, "{bad}");
        }
    }
}
