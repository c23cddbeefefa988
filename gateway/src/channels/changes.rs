//! postgres_changes: the subscriptions of joined channels, and the dispatcher that
//! turns captured row changes (`realtime.capture()` in the extension, NOTIFY
//! `pgr_realtime`, commit order) into frames — each only to the subscribers whose own
//! role and claims may SELECT the row under RLS.
//!
//! Per batch of changes (whatever arrived while the previous batch was checked):
//! one statement for the table privileges of the subscribers' roles, then one
//! pipeline (one round trip, one read-only transaction) that, for each distinct
//! (role, claims), sets them as REST does and asks which of the changed rows are
//! visible. Subscribers that share claims share the check, so the cost grows with the
//! number of distinct viewers, not with the number of sockets. DELETEs are not
//! checked against RLS (the row is gone; its old record carries only the primary
//! key), only against the SELECT privilege, as Supabase does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::queue::{Outgoing, SocketTx};
use super::registry::Registry;
use super::subscription::{Subscription, Who};
/// A viewer's settings for its row checks: role and claims (what RLS policies read,
/// as Supabase's realtime.apply_rls sets them), read-only. Lighter than REST's
/// request setup: there is no HTTP request behind a change.
const VIEWER: &str = "SELECT FROM (SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), set_config('transaction_read_only', 'on', true)) _s";
use crate::db::pipeline::Step;
use crate::db::sql::ident;
use crate::AppState;

/// Changes taken into one batch at most.
const MAX_BATCH: usize = 512;
/// How long table metadata (columns, primary key) is kept.
const META_TTL: Duration = Duration::from_secs(5);

/// How long a (role, table) SELECT privilege is trusted.
const PRIVILEGE_TTL: Duration = Duration::from_secs(1);

/// (role, table) → may SELECT, and when that was read.
type Privileges = Mutex<HashMap<(String, String), (bool, Instant)>>;

fn privileges() -> &'static Privileges {
    static P: std::sync::OnceLock<Privileges> = std::sync::OnceLock::new();
    P.get_or_init(Default::default)
}

/// What the dispatcher knows about a table.
struct TableMeta {
    /// `[{name, type}]` as JSON text.
    columns: String,
    /// Primary key columns and their SQL types (empty: none).
    pk: Vec<(String, String)>,
    /// Which of `$1` (a JSON array of key objects) are visible, as 1-based ordinals.
    check: String,
    /// `"schema"."table"`.
    rel: String,
    /// Its oid (privileges are asked by oid: the gateway's own login needs no USAGE
    /// on the table's schema to ask).
    oid: u32,
    at: Instant,
}

/// One captured change.
struct Change {
    schema: String,
    table: String,
    op: String,
    /// The `data` object of the frame, as JSON text (without `errors` when the
    /// receiver gets the row).
    data: Value,
}

/// Receives changes and delivers them; runs until the sender is dropped.
pub async fn run(st: AppState, reg: Arc<Registry>, mut rx: mpsc::Receiver<Value>) {
    let meta: Mutex<HashMap<(String, String), Arc<TableMeta>>> = Mutex::new(HashMap::new());
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if let Err(e) = dispatch(&st, &reg, &meta, batch).await {
            tracing::warn!(error = %e, "postgres_changes batch not delivered");
        }
    }
}

async fn table_meta(st: &AppState, cache: &Mutex<HashMap<(String, String), Arc<TableMeta>>>, schema: &str, table: &str) -> anyhow::Result<Option<Arc<TableMeta>>> {
    let k = (schema.to_owned(), table.to_owned());
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
        if m.at.elapsed() < META_TTL {
            return Ok(Some(m.clone()));
        }
    }
    let c = st.pool.get().await?;
    let row = c
        .query_opt(
            "SELECT (SELECT json_agg(json_build_object('name', a.attname, 'type', t.typname) ORDER BY a.attnum)
                       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text,
                    (SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod)) ORDER BY array_position(i.indkey::int2[], a.attnum))
                       FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisprimary)::text,
                    c.oid
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let columns: Option<String> = row.get(0);
    let pk: Vec<(String, String)> = row.get::<_, Option<String>>(1).and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let rel = format!("{}.{}", ident(schema), ident(table));
    // Identifiers and types come from the catalog, never from a request.
    // Each element is {"k": key, "r": the captured record}. The row must be visible AND
    // still be the captured version (compared as jsonb rendered in this session, so
    // time zones and json text layout do not matter; keys a trimmed record lacks take
    // the row's own values): a version changed again before the check (e.g. an
    // INSERT then an UPDATE in one transaction) is not sent, since RLS was only asked
    // about the row as it is now.
    let conds: Vec<String> = pk.iter().map(|(n, ty)| format!("t.{} = (x.k -> 'k' ->> {})::{}", ident(n), crate::db::sql::literal(n), ty)).collect();
    let check = format!(
        "SELECT coalesce(array_agg(x.i), '{{}}') FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(k, i) WHERE EXISTS (SELECT 1 FROM {rel} t WHERE {} AND to_jsonb(t) = to_jsonb(jsonb_populate_record(t, x.k -> 'r')))",
        if conds.is_empty() { "false".to_owned() } else { conds.join(" AND ") }
    );
    let oid: u32 = row.get(2);
    let m = Arc::new(TableMeta { columns: columns.unwrap_or_else(|| "[]".into()), pk, check, rel, oid, at: Instant::now() });
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(k, m.clone());
    Ok(Some(m))
}

fn parse_change(v: &Value) -> Option<Change> {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let (schema, table, op) = (s("schema")?, s("table")?, s("type")?);
    let mut data = json!({"schema": schema, "table": table, "commit_timestamp": v["commit_timestamp"], "type": op, "errors": v.get("errors").cloned().unwrap_or(Value::Null)});
    if op != "DELETE" {
        data["record"] = v["record"].clone();
    }
    if op != "INSERT" {
        data["old_record"] = v["old_record"].clone();
    }
    Some(Change { schema, table, op, data })
}

/// Per viewer, per table (`"schema"."table"`): the changed rows' keys and the
/// changes they come from.
type ViewerKeys = HashMap<Arc<Who>, BTreeMap<String, (Vec<Value>, Vec<usize>)>>;
/// Per viewer: its checks (statement, keys as JSON, changes).
type ViewerChecks = Vec<(Arc<Who>, Vec<(String, String, Vec<usize>)>)>;

/// One receiver of one change.
struct Delivery {
    change: usize,
    /// The subscribing channel (its subscription is looked up again before sending).
    member: u64,
    socket: SocketTx,
    topic: String,
    ids: Vec<u64>,
    who: Arc<Who>,
}

/// Bindings matched between two yields to the runtime.
const YIELD_EVERY: usize = 65_536;

async fn dispatch(st: &AppState, reg: &Registry, cache: &Mutex<HashMap<(String, String), Arc<TableMeta>>>, batch: Vec<Value>) -> anyhow::Result<()> {
    let changes: Vec<Change> = batch.iter().filter_map(parse_change).collect();
    // Who wants what (filters decided here, on the row's values).
    // Matched on a snapshot, outside the registry's lock (joins and leaves never wait
    // on a batch), yielding as it goes so a large set of subscriptions cannot hold a
    // runtime thread.
    let subs: Vec<(u64, Arc<Subscription>)> = reg.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(m, s)| (*m, s.clone())).collect();
    let now = crate::keys::now();
    let subs: Vec<(u64, Arc<Subscription>)> = subs.into_iter().filter(|(_, s)| s.exp.is_none_or(|e| e > now)).collect();
    let mut deliveries = Vec::new();
    let mut checked = 0usize;
    for (i, c) in changes.iter().enumerate() {
        let row = if c.op == "DELETE" { &c.data["old_record"] } else { &c.data["record"] };
        for (member, s) in &subs {
            checked += s.bindings.len();
            if checked >= YIELD_EVERY {
                checked = 0;
                tokio::task::yield_now().await;
            }
            let ids: Vec<u64> = s.bindings.iter().filter(|b| b.wants(&c.schema, &c.table, &c.op, row)).map(|b| b.id).collect();
            if !ids.is_empty() {
                deliveries.push(Delivery { change: i, member: *member, socket: s.socket.clone(), topic: s.topic.clone(), ids, who: s.who.clone() });
            }
        }
    }
    if deliveries.is_empty() {
        return Ok(());
    }
    // A table that cannot be described is not delivered; the rest of the batch is.
    let mut metas: Vec<Option<Arc<TableMeta>>> = Vec::with_capacity(changes.len());
    for c in &changes {
        metas.push(table_meta(st, cache, &c.schema, &c.table).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, schema = %c.schema, table = %c.table, "postgres_changes: table not described");
            None
        }));
    }
    // SELECT privilege per (role, table).
    let mut pairs: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut oids: HashMap<String, u32> = HashMap::new();
    for d in &deliveries {
        if let Some(m) = &metas[d.change] {
            pairs.insert((d.who.role.clone(), m.rel.clone()), false);
            oids.insert(m.rel.clone(), m.oid);
        }
    }
    // Known within PRIVILEGE_TTL: a GRANT or REVOKE applies within a second.
    let mut unknown = Vec::new();
    {
        let known = privileges().lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in pairs.iter_mut() {
            match known.get(k) {
                Some((ok, at)) if at.elapsed() < PRIVILEGE_TTL => *v = *ok,
                _ => unknown.push(k.clone()),
            }
        }
    }
    if !unknown.is_empty() {
        let (roles, rels): (Vec<String>, Vec<String>) = unknown.into_iter().unzip();
        let rel_oids: Vec<u32> = rels.iter().map(|r| oids.get(r).copied().unwrap_or(0)).collect();
        // By oid, so the login needs no USAGE on the schema to ask; CASE so a role
        // that does not exist is never passed to the privilege functions. A failure
        // leaves these pairs refused for this batch, never the whole batch lost.
        let rows = match st.pool.get().await {
            Ok(c) => c
                .query(
                    "SELECT x.r, x.t, CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = x.r) AND cl.oid IS NOT NULL
                            THEN has_schema_privilege(x.r, cl.relnamespace, 'USAGE') AND has_table_privilege(x.r, cl.oid, 'SELECT')
                            ELSE false END
                       FROM unnest($1::text[], $2::text[], $3::oid[]) AS x(r, t, o) LEFT JOIN pg_class cl ON cl.oid = x.o",
                    &[&roles, &rels, &rel_oids],
                )
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        let rows = rows.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "postgres_changes: privileges not checked");
            Vec::new()
        });
        let mut known = privileges().lock().unwrap_or_else(|e| e.into_inner());
        if known.len() > 10_000 {
            known.clear();
        }
        for r in rows {
            let (k, ok): ((String, String), bool) = ((r.get(0), r.get(1)), r.get(2));
            known.insert(k.clone(), (ok, Instant::now()));
            pairs.insert(k, ok);
        }
    }
    // Each delivery's privilege, looked up once.
    let privileged: Vec<bool> =
        deliveries.iter().map(|d| metas[d.change].as_ref().is_some_and(|m| pairs.get(&(d.who.role.clone(), m.rel.clone())).copied().unwrap_or(false))).collect();
    // Row visibility for INSERT / UPDATE: per viewer, per table, the changed keys.
    let mut viewers: ViewerKeys = HashMap::new();
    for (d, &ok) in deliveries.iter().zip(&privileged) {
        let (c, Some(m)) = (&changes[d.change], &metas[d.change]) else { continue };
        if c.op == "DELETE" || m.pk.is_empty() || !ok {
            continue;
        }
        let key: serde_json::Map<String, Value> = m.pk.iter().map(|(n, _)| (n.clone(), c.data["record"][n].clone())).collect();
        let e = viewers.entry(d.who.clone()).or_default().entry(m.rel.clone()).or_default();
        if !e.1.contains(&d.change) {
            e.0.push(json!({"k": key, "r": c.data["record"]}));
            e.1.push(d.change);
        }
    }
    let visible = check_rows(st, &metas, &changes, viewers).await;
    // Each change's `data` is rendered once, whatever the number of receivers.
    let rendered: Vec<Option<String>> = changes
        .iter()
        .zip(&metas)
        .map(|(c, m)| {
            let m = m.as_ref()?;
            let mut data = c.data.clone();
            if m.pk.is_empty() {
                // No key to check the row by: nothing of it is sent (as Supabase).
                data["record"] = json!({});
                data["old_record"] = json!({});
                data["errors"] = json!(["Error 400: Bad Request, no primary key"]);
            }
            data["columns"] = serde_json::from_str(&m.columns).unwrap_or(Value::Null);
            Some(data.to_string())
        })
        .collect();
    // A subscriber that left, or changed its token, while the batch was checked gets
    // nothing that was checked for the old token.
    let current: std::collections::HashSet<u64> = {
        let subs = reg.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        deliveries.iter().filter(|d| subs.get(&d.member).is_some_and(|s| Arc::ptr_eq(&s.who, &d.who))).map(|d| d.member).collect()
    };
    for (d, ok) in deliveries.into_iter().zip(privileged) {
        let c = &changes[d.change];
        let (Some(m), Some(data)) = (&metas[d.change], &rendered[d.change]) else { continue };
        if !current.contains(&d.member) || !ok {
            continue;
        }
        if c.op != "DELETE" && !m.pk.is_empty() && !visible.contains(&(d.who.clone(), d.change)) {
            continue;
        }
        let payload = format!("{{\"ids\":{},\"data\":{}}}", json!(d.ids), data);
        d.socket.send(Outgoing::new(None, None, &d.topic, "postgres_changes", payload));
    }
    Ok(())
}

/// Which (viewer, change) pairs may see their row: one pipeline, each viewer's
/// settings then its per-table checks.
async fn check_rows(st: &AppState, metas: &[Option<Arc<TableMeta>>], changes: &[Change], viewers: ViewerKeys) -> std::collections::HashSet<(Arc<Who>, usize)> {
    let mut out = std::collections::HashSet::new();
    if viewers.is_empty() {
        return out;
    }
    // Viewers whose own check failed lately (a policy that errors on their claims) are
    // checked alone, so they cannot fail everybody's pipeline batch after batch.
    if viewers.len() > 1 {
        let (alone, together): (ViewerKeys, ViewerKeys) = {
            let q = quarantine().lock().unwrap_or_else(|e| e.into_inner());
            viewers.into_iter().partition(|(w, _)| q.get(w.as_ref()).is_some_and(|t| t.elapsed() < QUARANTINE))
        };
        if !alone.is_empty() {
            // Each alone, a few at a time, beside the others' checks: viewers whose
            // claims make a policy fail (anyone who can sign in may craft some) cost
            // the batch their round trips side by side, not one after another.
            use futures_util::StreamExt;
            let singles =
                futures_util::stream::iter(alone).map(|(w, k)| Box::pin(check_rows(st, metas, changes, HashMap::from([(w, k)])))).buffer_unordered(crate::config::cores());
            let (rest, singles) = tokio::join!(Box::pin(check_rows(st, metas, changes, together)), singles.collect::<Vec<_>>());
            out.extend(rest);
            out.extend(singles.into_iter().flatten());
            return out;
        }
        return Box::pin(check_split(st, metas, changes, together)).await;
    }
    check_split(st, metas, changes, viewers).await
}

/// Viewers per pipeline below which a batch's checks are not split.
const MIN_SPLIT: usize = 16;

/// The viewers' checks in up to one pipeline per core, side by side: each viewer's
/// statements run one after another in a pipeline, so a batch for many viewers
/// would otherwise wait on a single backend while the other cores idle.
async fn check_split(st: &AppState, metas: &[Option<Arc<TableMeta>>], changes: &[Change], viewers: ViewerKeys) -> std::collections::HashSet<(Arc<Who>, usize)> {
    let parts = (viewers.len() / MIN_SPLIT).clamp(1, crate::config::cores());
    if parts == 1 {
        return check_rows_together(st, metas, changes, viewers).await;
    }
    let mut chunks: Vec<ViewerKeys> = (0..parts).map(|_| HashMap::new()).collect();
    for (i, (who, keys)) in viewers.into_iter().enumerate() {
        chunks[i % parts].insert(who, keys);
    }
    let checks = chunks.into_iter().map(|c| check_rows_together(st, metas, changes, c));
    futures_util::future::join_all(checks).await.into_iter().flatten().collect()
}

/// How long a viewer whose check failed is checked apart from the others.
const QUARANTINE: Duration = Duration::from_secs(30);

fn quarantine() -> &'static Mutex<HashMap<Who, Instant>> {
    static Q: std::sync::OnceLock<Mutex<HashMap<Who, Instant>>> = std::sync::OnceLock::new();
    Q.get_or_init(Default::default)
}

async fn check_rows_together(st: &AppState, metas: &[Option<Arc<TableMeta>>], changes: &[Change], viewers: ViewerKeys) -> std::collections::HashSet<(Arc<Who>, usize)> {
    let mut out = std::collections::HashSet::new();
    let viewers: ViewerChecks = viewers
        .into_iter()
        .map(|(w, tables)| {
            let checks = tables
                .into_iter()
                .filter_map(|(_, (keys, idx))| {
                    let m = metas[*idx.first()?].as_ref()?;
                    debug_assert!(idx.iter().all(|&i| changes[i].table == changes[idx[0]].table));
                    Some((m.check.clone(), Value::Array(keys).to_string(), idx))
                })
                .collect();
            (w, checks)
        })
        .collect();
    // The settings of every viewer, then its checks, in one round trip; a viewer whose
    // settings fail (a role dropped since it joined) is checked alone and sees nothing.
    let mut steps = Vec::new();
    let mut index = Vec::new(); // step → (viewer, check)
    for (vi, (_, checks)) in viewers.iter().enumerate() {
        let w = &viewers[vi].0;
        steps.push(Step { sql: VIEWER, params: vec![Some(w.role.as_str()), Some(w.claims.as_str())], text_params: false });
        index.push(None);
        for (ci, (sql, keys, _)) in checks.iter().enumerate() {
            steps.push(Step { sql, params: vec![Some(keys.as_str())], text_params: false });
            index.push(Some((vi, ci)));
        }
    }
    let results = st.wire.pipeline(&steps, false /* many viewers' checks, each batch its own shape */).await;
    match results {
        Ok(results) => {
            for (r, at) in results.into_iter().zip(index) {
                let Some((vi, ci)) = at else { continue };
                let text = r.rows.into_iter().next().and_then(|row| row.into_iter().next().flatten()).unwrap_or_default();
                let (who, checks) = &viewers[vi];
                for ord in text.trim_matches(|c| c == '{' || c == '}').split(',').filter_map(|n| n.parse::<usize>().ok()) {
                    if let Some(&change) = checks[ci].2.get(ord.wrapping_sub(1)) {
                        out.insert((who.clone(), change));
                    }
                }
            }
        }
        // No connection in time, or one lost: nobody's claims are at fault, so nobody
        // is checked alone or set apart for it (that would multiply the waits).
        Err(e @ (crate::db::DbError::Busy | crate::db::DbError::NoConnection(_) | crate::db::DbError::Lost(_))) => {
            tracing::warn!(error = %e, viewers = viewers.len(), "postgres_changes row checks not run: not delivered to these viewers");
        }
        Err(e) if viewers.len() > 1 => {
            tracing::debug!(error = %e, "row checks failed together; checking viewers one by one");
            for (who, checks) in viewers {
                let one: ViewerKeys = HashMap::from([(
                    who.clone(),
                    checks.into_iter().enumerate().map(|(i, (_, keys, idx))| (i.to_string(), (serde_json::from_str::<Vec<Value>>(&keys).unwrap_or_default(), idx))).collect(),
                )]);
                out.extend(Box::pin(check_rows(st, metas, changes, one)).await);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, role = %viewers[0].0.role, "postgres_changes row check failed: not delivered to this viewer");
            let mut q = quarantine().lock().unwrap_or_else(|e| e.into_inner());
            if q.len() > 10_000 {
                q.clear();
            }
            q.insert(viewers[0].0.as_ref().clone(), Instant::now());
        }
    }
    out
}
