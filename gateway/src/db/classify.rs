//! What a piece of SQL is, decided by PostgreSQL's own parser (libpg_query through
//! the `pg_query` crate), never by looking at the text: exactly one statement, and
//! whether it only reads.
//!
//! A read is a SELECT (VALUES, TABLE and WITH included) with no data-modifying CTE,
//! no `SELECT … INTO` and no row locks (`FOR UPDATE / SHARE` anywhere, subqueries
//! too), `SHOW`, or `EXPLAIN` without ANALYZE of such a read. The whole parse tree
//! is walked (every node, through its serde form: no node type can be missed), so a
//! DELETE in a CTE, a lock in a lateral subquery or an INTO deep in a UNION all
//! count. Functions a read calls may still try to write; the read-only transaction
//! the reads run in refuses writes to tables, though not every side effect (advisory
//! locks, pg_notify, pg_terminate_backend are allowed in a read-only transaction: the
//! target's own privileges decide those).
//!
//! Parsing runs on its own thread with a large stack, over input bounded in size:
//! the parser and the tree walk are recursive and the text is the caller's.

use serde_json::Value;

/// Stack of the parsing thread: libpg_query stops at 2 MiB of its own recursion
/// ("stack depth limit exceeded"); decoding and walking its tree take the rest.
pub const PARSE_STACK: usize = 64 * 1024 * 1024;

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 1024 * 1024;

/// Most tokens a statement may have (its tree is built and walked in memory).
pub const MAX_TOKENS: usize = 200_000;

/// One parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's own text: no trailing semicolon, no neighbouring statements.
    pub text: String,
    /// What it is.
    pub kind: Kind,
    /// The parser's name for it (`SelectStmt`, `InsertStmt`, …).
    pub node: String,
    /// The relations it names (`schema` when qualified); a name is left out where a
    /// CTE of that name is in scope.
    pub relations: Vec<(Option<String>, String)>,
    /// The functions it calls (unqualified name, lower case).
    pub functions: Vec<String>,
    /// The highest `$n` it uses.
    pub params: usize,
}

/// The kinds the workbench treats differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A read that can be wrapped as a subquery for paging (SELECT, VALUES, TABLE, WITH).
    Select,
    /// A read that cannot be wrapped (SHOW, EXPLAIN).
    OtherRead,
    /// INSERT / UPDATE / DELETE / MERGE: `returning` when it has a RETURNING list.
    Dml {
        /// Whether it returns rows.
        returning: bool,
    },
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, …: only through the session transaction API.
    Transaction,
    /// SET, RESET, DISCARD, LISTEN, PREPARE, DECLARE …: change the connection itself.
    SessionState,
    /// Anything else (DDL, DCL, utility statements) and reads that are not plain reads.
    Other,
}

impl Kind {
    /// Whether the statement only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, Kind::Select | Kind::OtherRead)
    }
}

/// Why SQL was refused before it reached a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid SQL (the parser's message), or too long, or too deeply nested.
    Invalid(String),
    /// No statement at all.
    Empty,
    /// More than one statement.
    Several(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(m) => write!(f, "{m}"),
            Refusal::Empty => f.write_str("no SQL statement was given"),
            Refusal::Several(n) => write!(f, "exactly one statement is allowed; got {n}"),
        }
    }
}

/// Parser threads (each with [`PARSE_STACK`]), started on first use: at most this
/// many statements parse at once, gateway-wide.
const PARSERS: usize = 2;

type Job = (String, tokio::sync::oneshot::Sender<Result<Statement, Refusal>>);

fn parsers() -> Option<&'static std::sync::mpsc::SyncSender<Job>> {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Job>>> = std::sync::OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(256);
            let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
            let mut started = 0;
            for i in 0..PARSERS {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new().name(format!("sql-parse-{i}")).stack_size(PARSE_STACK).spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((sql, reply)) = job else { return };
                    let _ = reply.send(classify_now(&sql));
                });
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

/// Statements classified lately, by their text (dashboards send the same SQL again
/// and again; parsing is most of a small query's cost). Cleared when full.
static RECENT: std::sync::Mutex<Option<std::collections::HashMap<String, Statement>>> = std::sync::Mutex::new(None);
const RECENT_MAX: usize = 1024;
const RECENT_MAX_SQL: usize = 8 * 1024;

/// Parses `sql` (on a parser thread) and classifies its one statement.
pub async fn classify(sql: &str) -> Result<Statement, Refusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Refusal::Invalid(format!("the SQL text is longer than {MAX_SQL_BYTES} bytes")));
    }
    if sql.contains('\0') {
        return Err(Refusal::Invalid("the SQL text contains a NUL character".into()));
    }
    if let Some(hit) = RECENT.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|r| r.get(sql).cloned()) {
        return Ok(hit);
    }
    let busy = || Refusal::Invalid("the SQL parser is busy; try again".into());
    let queue = parsers().ok_or_else(busy)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    queue.try_send((sql.to_owned(), tx)).map_err(|_| busy())?;
    let result = rx.await.unwrap_or_else(|_| Err(Refusal::Invalid("the SQL could not be parsed".into())));
    if let Ok(st) = &result {
        if sql.len() <= RECENT_MAX_SQL {
            let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
            let r = recent.get_or_insert_with(std::collections::HashMap::new);
            if r.len() >= RECENT_MAX {
                r.clear();
            }
            r.insert(sql.to_owned(), st.clone());
        }
    }
    result
}

/// Largest [`nesting_estimate`] parsed: the tree is decoded and walked recursively,
/// so its depth is bounded before it is built (250 nested subqueries or a 1000-term
/// sum still fit; 64 MiB of stack holds it even in a debug build).
pub const MAX_NESTING: usize = 3000;

/// An upper bound of the parse tree's depth from the tokens alone (the scanner is
/// not recursive), in levels of the tree's serde form (a node is about three). Each
/// open group — parenthesis, bracket, CASE … END — costs 12 (a subquery is about
/// 10); in a group, set operations and JOINs chain left-deep (3 each, for the whole
/// group), and so do expression operators (3 each), but only until the next sibling
/// starts (a comma, AND, OR, WHEN, THEN, ELSE: those lists are flat).
pub fn nesting_estimate(sql: &str) -> Result<usize, Refusal> {
    // `scan`, not `scan_tokens`: the latter builds a slice from a null pointer when
    // there are no tokens (a comment alone), which is undefined behaviour.
    let tokens = pg_query::scan(sql).map_err(|e| Refusal::Invalid(parse_message(e)))?.tokens;
    // Per open group: what opened it, the levels it adds so far, and of those the
    // current operator chain. A closer only closes its own opener (`END` the column
    // name does not close a parenthesis).
    let mut stack: Vec<(i32, usize, usize)> = vec![(0, 0, 0)];
    let (mut total, mut max) = (0usize, 0usize);
    if tokens.len() > MAX_TOKENS {
        return Err(Refusal::Invalid(format!("the statement has more than {MAX_TOKENS} tokens")));
    }
    for t in tokens {
        match t.token {
            // ( [ CASE
            40 | 91 | 322 => {
                stack.push((t.token, 12, 0));
                total += 12;
            }
            // ) ] END, each closing its own opener only
            41 | 93 | 404 if stack.len() > 1 && stack.last().is_some_and(|g| g.0 == opener_of(t.token)) => {
                total -= stack.pop().map(|g| g.1).unwrap_or(0);
            }
            // ;
            59 => {
                stack = vec![(0, 0, 0)];
                total = 0;
            }
            // , AND OR WHEN THEN ELSE: a sibling starts, the operator chain ends.
            44 | 292 | 572 | 746 | 701 | 399 => {
                if let Some(g) = stack.last_mut() {
                    total -= g.2;
                    g.1 -= g.2;
                    g.2 = 0;
                }
            }
            // UNION INTERSECT EXCEPT JOIN: left-deep for the whole group.
            722 | 478 | 410 | 485 => {
                if let Some(g) = stack.last_mut() {
                    g.1 += 3;
                }
                total += 3;
            }
            // % * + - / < = > ^, Op, ::, <= >= <>, and the keyword operators.
            37 | 42 | 43 | 45 | 47 | 60 | 61 | 62 | 94 | 265 | 268 | 272 | 273 | 274 | 302 | 309 | 335 | 408 | 454 | 459 | 482 | 483 | 510 | 550 | 553 | 569 | 579 | 665 => {
                if let Some(g) = stack.last_mut() {
                    g.1 += 3;
                    g.2 += 3;
                }
                total += 3;
            }
            _ => {}
        }
        max = max.max(total);
    }
    Ok(max)
}

/// The opener a closing token closes: `)` `(`, `]` `[`, END CASE.
fn opener_of(closer: i32) -> i32 {
    match closer {
        41 => 40,
        93 => 91,
        _ => 322,
    }
}

/// The parse and the walk, on the calling thread (which needs [`PARSE_STACK`]).
pub fn classify_now(sql: &str) -> Result<Statement, Refusal> {
    if nesting_estimate(sql)? > MAX_NESTING {
        return Err(Refusal::Invalid(format!("the statement is nested too deeply (more than {MAX_NESTING} levels)")));
    }
    let parsed = pg_query::parse(sql, 0).map_err(|e| Refusal::Invalid(parse_message(e)))?;
    let stmts = &parsed.protobuf.stmts;
    match stmts.len() {
        0 => return Err(Refusal::Empty),
        1 => {}
        n => return Err(Refusal::Several(n)),
    }
    let raw = &stmts[0];
    let text = statement_text(sql, raw.stmt_location, raw.stmt_len);
    let tree = serde_json::to_value(raw).map_err(|_| Refusal::Invalid("the statement is too deeply nested".into()))?;
    let top = tree.get("stmt").and_then(|n| n.get("node")).and_then(Value::as_object).and_then(|o| o.iter().next());
    let Some((node, body)) = top else { return Err(Refusal::Empty) };
    let walk = Walk::of(&tree);
    let kind = match node.as_str() {
        "SelectStmt" if walk.plain_read() => Kind::Select,
        "VariableShowStmt" => Kind::OtherRead,
        "ExplainStmt" if walk.plain_read() && !explain_analyze(body) => Kind::OtherRead,
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            let list = body.get("returning_list").or_else(|| body.pointer("/returning_clause/exprs"));
            Kind::Dml { returning: list.and_then(Value::as_array).is_some_and(|l| !l.is_empty()) }
        }
        "TransactionStmt" => Kind::Transaction,
        "VariableSetStmt" | "DiscardStmt" | "ListenStmt" | "UnlistenStmt" | "PrepareStmt" | "DeallocateStmt" | "DeclareCursorStmt" | "ClosePortalStmt" | "FetchStmt"
        | "LoadStmt" => Kind::SessionState,
        _ => Kind::Other,
    };
    Ok(Statement { text, kind, node: node.clone(), relations: walk.relations, functions: walk.functions, params: walk.params })
}

/// Nesting of objects in a parse tree's serde form (for tests of the estimate).
pub fn tree_depth(sql: &str) -> Option<usize> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let tree = serde_json::to_value(&parsed.protobuf).ok()?;
    let (mut max, mut stack) = (0, vec![(&tree, 0usize)]);
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d))),
            _ => {}
        }
    }
    Some(max)
}

/// libpg_query's message, with the position it gives.
fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) => m,
        pg_query::Error::Decode(_) => "the statement is too deeply nested".into(),
        other => other.to_string(),
    }
}

/// The statement's own text: `stmt_len` 0 means "to the end"; byte offsets.
fn statement_text(sql: &str, location: i32, len: i32) -> String {
    let start = usize::try_from(location).unwrap_or(0).min(sql.len());
    let end = if len <= 0 { sql.len() } else { start.saturating_add(len as usize).min(sql.len()) };
    let text = sql.get(start..end).unwrap_or(sql);
    text.trim_end_matches(|c: char| c == ';' || c.is_whitespace()).trim_start().to_owned()
}

/// `EXPLAIN ANALYZE …` / `EXPLAIN (ANALYZE …)` runs the statement: not a read.
fn explain_analyze(explain: &Value) -> bool {
    explain
        .get("options")
        .and_then(Value::as_array)
        .is_some_and(|opts| opts.iter().any(|o| o.pointer("/node/DefElem/defname").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case("analyze"))))
}

/// Functions that must not run in SQL a caller writes to run *as itself* on the
/// gateway's own login (the agent's tools on this cluster): they change the role or
/// the request's claims (`set_config`; the login is a member of every API role), run
/// SQL text of their own (the `*_to_xml` family, `ts_stat`, `ts_rewrite`, dblink), signal other
/// backends, reach files, or leave state on a pooled connection (session locks,
/// NOTIFY).
pub const CALLER_UNSAFE: &[&str] = &[
    "set_config",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_fetch",
    "dblink_send_query",
    "dblink_connect",
    "dblink_connect_u",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_notify",
    "pg_logical_emit_message",
    "lo_import",
    "lo_export",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
];

/// The first function of [`CALLER_UNSAFE`] a statement calls.
pub fn caller_unsafe(st: &Statement) -> Option<&'static str> {
    CALLER_UNSAFE.iter().copied().find(|f| st.functions.iter().any(|g| g == f))
}

/// What the walk over every node found.
struct Walk {
    writes: bool,
    into: bool,
    locks: bool,
    relations: Vec<(Option<String>, String)>,
    functions: Vec<String>,
    params: usize,
}

impl Walk {
    /// Visits every node with an explicit stack (no recursion over caller input).
    /// CTE names are scoped as PostgreSQL scopes them: a WITH's names are visible in
    /// its statement's body and to the later CTEs of the same list (all of them when
    /// RECURSIVE) — so `with secret as (select * from secret) …` still names the
    /// table `secret` inside the CTE.
    fn of(tree: &Value) -> Walk {
        let mut w = Walk { writes: false, into: false, locks: false, relations: Vec::new(), functions: Vec::new(), params: 0 };
        let root: std::rc::Rc<Vec<String>> = Default::default();
        let mut stack = vec![(tree, root)];
        while let Some((v, scope)) = stack.pop() {
            match v {
                Value::Object(map) => {
                    let with = map.get("with_clause").filter(|c| !c.is_null());
                    let cte_names: Vec<String> = with
                        .and_then(|c| c.get("ctes"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.pointer("/node/CommonTableExpr/ctename").or_else(|| c.pointer("/CommonTableExpr/ctename")).and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect();
                    let body_scope = if cte_names.is_empty() {
                        scope.clone()
                    } else {
                        let mut s = (*scope).clone();
                        s.extend(cte_names.iter().cloned());
                        std::rc::Rc::new(s)
                    };
                    for (k, child) in map {
                        match k.as_str() {
                            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => w.writes = true,
                            "into_clause" if !child.is_null() => w.into = true,
                            "locking_clause" if child.as_array().is_some_and(|a| !a.is_empty()) => w.locks = true,
                            "LockingClause" => w.locks = true,
                            "IntoClause" => w.into = true,
                            "RangeVar" => {
                                let text = |k: &str| child.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
                                if let Some(rel) = text("relname") {
                                    let schema = text("schemaname");
                                    if schema.is_some() || !scope.contains(&rel) {
                                        w.relations.push((schema, rel));
                                    }
                                }
                            }
                            "ParamRef" => {
                                let n = child.get("number").and_then(Value::as_u64).unwrap_or(0);
                                w.params = w.params.max(usize::try_from(n).unwrap_or(usize::MAX));
                            }
                            "FuncCall" => {
                                let name =
                                    child.get("funcname").and_then(Value::as_array).and_then(|n| n.last()).and_then(|n| n.pointer("/node/String/sval")).and_then(Value::as_str);
                                w.functions.push(name.unwrap_or("?").to_ascii_lowercase());
                            }
                            _ => {}
                        }
                        if k == "with_clause" && !cte_names.is_empty() {
                            // Each CTE sees the earlier ones (all, when RECURSIVE).
                            let recursive = child.get("recursive").and_then(Value::as_bool).unwrap_or(false);
                            for (i, cte) in child.get("ctes").and_then(Value::as_array).into_iter().flatten().enumerate() {
                                let mut s = (*scope).clone();
                                s.extend(cte_names[..if recursive { cte_names.len() } else { i.min(cte_names.len()) }].iter().cloned());
                                stack.push((cte, std::rc::Rc::new(s)));
                            }
                            continue;
                        }
                        stack.push((child, body_scope.clone()));
                    }
                }
                Value::Array(items) => stack.extend(items.iter().map(|i| (i, scope.clone()))),
                _ => {}
            }
        }
        w
    }

    fn plain_read(&self) -> bool {
        !self.writes && !self.into && !self.locks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Result<Kind, Refusal> {
        classify_now(sql).map(|s| s.kind)
    }

    #[test]
    fn reads() {
        for sql in [
            "select 1",
            "SELECT * FROM t WHERE a = 'x; delete from t'",
            "with a as (select 1) select * from a",
            "values (1), (2)",
            "table t",
            "show search_path",
            "explain select * from t",
            "explain (costs off) select 1",
            "select 1; -- trailing comment",
            "select $$ ; drop table x; $$",
            "select 1 /* ; drop table x */",
            "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r",
        ] {
            assert!(kind(sql).unwrap().is_read(), "{sql}");
        }
    }

    #[test]
    fn not_reads() {
        for sql in [
            "with d as (delete from t returning *) select * from d",
            "with u as (update t set a = 1 returning *) select 1",
            "with i as (insert into t values (1) returning *) select 1",
            "select * into newtable from t",
            "select * from t for update",
            "select * from t for share",
            "select * from t for key share",
            "select * from (select * from t for update) s",
            "select 1 union all (select 1 from t for no key update)",
            "select * from t, lateral (select * from u for update) x",
            "explain analyze select 1",
            "explain (analyze, costs off) select 1",
            "explain (analyze false) select 1",
            "explain insert into t values (1)",
            "insert into t values (1)",
            "create table x (a int)",
            "copy t to stdout",
            "do $$ begin end $$",
            "call p()",
            "begin",
            "set role postgres",
            "lock table t",
        ] {
            assert!(!kind(sql).unwrap().is_read(), "{sql}");
        }
    }

    #[test]
    fn one_statement_only() {
        assert_eq!(kind("select 1; drop table x"), Err(Refusal::Several(2)));
        assert_eq!(kind("select 1; select 2;"), Err(Refusal::Several(2)));
        assert_eq!(kind("/* c */ select 1 -- ; drop table x\n; drop table x"), Err(Refusal::Several(2)));
        assert_eq!(kind(""), Err(Refusal::Empty));
        assert_eq!(kind(" ; ;"), Err(Refusal::Empty));
        assert!(matches!(kind("select 1 /* unterminated"), Err(Refusal::Invalid(_))));
        assert!(matches!(kind("select $$ unterminated"), Err(Refusal::Invalid(_))));
        assert!(matches!(kind("selec 1"), Err(Refusal::Invalid(m)) if m.contains("syntax error")));
    }

    #[test]
    fn kinds_and_text() {
        assert_eq!(classify_now("select $2, $1 + $3").unwrap().params, 3);
        let s = classify_now("  select 1 ;  ").unwrap();
        assert_eq!((s.text.as_str(), s.kind, s.node.as_str()), ("select 1", Kind::Select, "SelectStmt"));
        assert_eq!(kind("insert into t values (1) returning id").unwrap(), Kind::Dml { returning: true });
        assert_eq!(kind("delete from t").unwrap(), Kind::Dml { returning: false });
        assert_eq!(kind("commit").unwrap(), Kind::Transaction);
        assert_eq!(kind("savepoint a").unwrap(), Kind::Transaction);
        assert_eq!(kind("set search_path = x").unwrap(), Kind::SessionState);
        assert_eq!(kind("show all").unwrap(), Kind::OtherRead);
        assert_eq!(kind("grant select on t to u").unwrap(), Kind::Other);
        let rels = classify_now("with c as (select 1) select * from c, public.a join b on true where x in (select y from s.z)").unwrap().relations;
        let mut rels: Vec<String> = rels.iter().map(|(s, n)| format!("{}.{n}", s.as_deref().unwrap_or("-"))).collect();
        rels.sort();
        assert_eq!(rels, ["-.b", "public.a", "s.z"]);
        let mut f = classify_now("select count(*), pg_catalog.query_to_xml('select 1', true, false, '') from t").unwrap().functions;
        f.sort();
        assert_eq!(f, ["count", "query_to_xml"]);
        // A CTE hides a table only where it is in scope.
        let rels = |sql: &str| {
            let mut r: Vec<String> = classify_now(sql).unwrap().relations.iter().map(|(s, n)| format!("{}.{n}", s.as_deref().unwrap_or("-"))).collect();
            r.sort();
            r
        };
        assert_eq!(rels("with secret as (select * from secret) select * from secret"), ["-.secret"]);
        assert_eq!(rels("select * from secret where exists (with secret as (select 1) select 1 from secret)"), ["-.secret"]);
        assert_eq!(rels("with a as (select 1), b as (select * from a) select * from b"), Vec::<String>::new());
        assert_eq!(rels("with b as (select * from a), a as (select 1) select * from b"), ["-.a"]);
        assert_eq!(rels("with recursive a as (select 1 union all select * from a) select * from a"), Vec::<String>::new());
        assert_eq!(rels("select * from (with t as (select 1) select * from t) x, t"), ["-.t"]);
        assert_eq!(caller_unsafe(&classify_now("select pg_catalog.set_config('role', 'service_role', true)").unwrap()), Some("set_config"));
        assert_eq!(caller_unsafe(&classify_now("select * from t where x in (select ts_stat('select 1'))").unwrap()), Some("ts_stat"));
        assert_eq!(caller_unsafe(&classify_now("select count(*), now() from t").unwrap()), None);
    }

    #[tokio::test]
    async fn deep_queries_parse_and_hostile_nesting_is_refused_not_fatal() {
        let nested = format!("select {}1{}", "(select ".repeat(60), ")".repeat(60));
        assert_eq!(classify(&nested).await.map(|s| s.kind), Ok(Kind::Select));
        let long_sum = format!("select a{} from t", " + a".repeat(500));
        assert_eq!(classify(&long_sum).await.map(|s| s.kind), Ok(Kind::Select));
        let many = format!("select 1 where {}", (0..1500).map(|i| format!("c{i} = {i}")).collect::<Vec<_>>().join(" and "));
        assert_eq!(classify(&many).await.map(|s| s.kind), Ok(Kind::Select), "a long AND list is flat");
        let too_deep = |r: Result<Statement, Refusal>| matches!(r, Err(Refusal::Invalid(m)) if m.contains("nested too deeply"));
        for d in [300, 5000, 50_000] {
            assert!(too_deep(classify(&format!("select {}1{}", "(select ".repeat(d), ")".repeat(d))).await), "{d}");
        }
        assert!(too_deep(classify(&format!("select 1{}", "+1".repeat(1001))).await));
        assert!(too_deep(classify(&format!("select {}true", "not ".repeat(100_000))).await));
        assert!(too_deep(classify(&format!("select {}1{}", "array[".repeat(300), "]".repeat(300))).await));
        let union = (0..1200).map(|i| format!("select {i}, {i}")).collect::<Vec<_>>().join(" union all ");
        assert!(too_deep(classify(&union).await), "commas do not hide a UNION chain");
        assert!(too_deep(classify(&format!("select {}1{}", "case when true then ".repeat(300), " end".repeat(300))).await));
        // END as a name closes nothing.
        let ends = format!("select {}1{}", "t.end and (".repeat(400), ")".repeat(400));
        assert!(too_deep(classify(&ends).await), "END does not close a parenthesis");
        let named = format!("select {}1{}", "(select 1 as end, ".repeat(400), ")".repeat(400));
        assert!(too_deep(classify(&named).await));
        let wide = format!("select {} from t", (0..3000).map(|i| format!("a{i} + 1 as b{i}")).collect::<Vec<_>>().join(", "));
        assert_eq!(classify(&wide).await.map(|s| s.kind), Ok(Kind::Select), "a wide select list is flat");
        let parens = format!("select {}1{}", "(".repeat(200_000), ")".repeat(200_000));
        let _ = classify(&parens).await;
        let sum = format!("select 1{}", "+1".repeat(5000));
        let _ = classify(&sum).await;
        assert!(classify(&"x".repeat(MAX_SQL_BYTES + 1)).await.is_err());
    }
}
