//! Plan: parsed request + schema cache → one SQL statement. No IO.
//!
//! Every name is looked up in the cache (unknown → 4xx) before it is quoted; every
//! value becomes a `$n::text` bind cast to the column's catalog type. Postgres builds
//! the JSON (`json_agg`), so rows are never serialised in Rust.

use super::embed;
use super::error::RestError;
use super::request::args::Arg;
use super::request::{parse_list, Condition, Field, Filter, Op, OrderTerm, Quantifier, QueryParams, SelectItem};
use crate::db::schema_cache::{Function, SchemaCache, Table};
use crate::db::sql::{array_literal, ident, qualified, Estimate, Sql};
use crate::error::code::pgrst;
use crate::rest::prefer::Accept;

mod render;
pub use render::{join_rows, AGG_SEPARATOR};
mod select;
mod write;
use select::{check_embed_scopes, embed_exists, select_sql};
pub use write::{delete, insert, put, update, OnConflict, Payload};

/// Stack left below which a nesting level continues on a new heap segment.
const RED_ZONE: usize = 64 * 1024;
/// Size of such a segment.
const STACK_GROWTH: usize = 1024 * 1024;

/// Alias of the relation rows are read from.
const R: &str = "_pgs_r";

/// Columns a statement reads from: a table's (typed) or a function result's.
pub struct Source<'a> {
    /// Name for messages.
    pub name: &'a str,
    /// Known columns with types; `None` = any name is accepted (function results,
    /// checked by Postgres itself).
    pub columns: Option<&'a Table>,
    /// The SQL alias rows are read under.
    pub alias: String,
    /// For embedding: the cache and the request (embedded parameters).
    pub ctx: Option<(&'a SchemaCache, &'a QueryParams)>,
    /// Path of embed keys from the top (empty at the top).
    pub path: Vec<String>,
    /// This level's select list (where filters on embedded resources find them).
    pub items: &'a [SelectItem],
}

impl<'a> Source<'a> {
    /// The top-level source of a table.
    pub fn top(table: &'a Table, cache: &'a SchemaCache, q: &'a QueryParams) -> Self {
        Source { name: &table.name, columns: Some(table), alias: R.to_owned(), ctx: Some((cache, q)), path: Vec::new(), items: &q.select }
    }
}

impl Source<'_> {
    /// The data representation (PostgREST) of values of type `ty`, if any.
    fn rep(&self, ty: Option<&str>) -> Option<&crate::db::schema_cache::Representation> {
        let (cache, _) = self.ctx?;
        cache.rep(ty?)
    }

    /// Whether a column of this source is rendered by a representation (then `*`
    /// is written out column by column, as PostgREST does).
    fn has_formatted_columns(&self) -> bool {
        match (self.columns, self.ctx) {
            (Some(t), Some((cache, _))) if !cache.reps.is_empty() => t.columns.iter().any(|c| cache.rep(&c.type_name).is_some_and(|r| r.to_json.is_some())),
            _ => false,
        }
    }

    fn column_type(&self, col: &str) -> Result<Option<&str>, RestError> {
        match self.columns {
            None => Ok(None),
            Some(t) => t.column(col).map(|c| Some(c.type_name.as_str())).ok_or_else(|| RestError::no_column(self.name, col)),
        }
    }
}

/// `_pgs_r."col"->'a'->>'b'` and the type of the expression (None = unknown/json).
fn field_expr(sql: &mut Sql, src: &Source, f: &Field) -> Result<(String, Option<String>), RestError> {
    let (mut expr, ty) = match src.column_type(&f.column) {
        Ok(ty) => (format!("{}.{}", src.alias, ident(&f.column)), ty.map(str::to_owned)),
        Err(e) => match computed_column(src, &f.column) {
            Some(call) => (call, None),
            None => return Err(e),
        },
    };
    if f.path.is_empty() {
        return Ok((expr, ty));
    }
    // As PostgREST: a path into anything but json / jsonb (a composite, an array, a
    // computed column) reads `to_jsonb(col)`.
    if !matches!(ty.as_deref(), Some("json" | "jsonb")) {
        expr = format!("to_jsonb({expr})");
    }
    for step in &f.path {
        expr.push_str(if step.as_text { "->>" } else { "->" });
        // An array index is written as the integer it parses to (never as the
        // request's text); every other key is a bind parameter.
        let digits = step.key.strip_prefix('-').unwrap_or(&step.key);
        let index = if !digits.is_empty() && digits.len() < 10 && digits.bytes().all(|b| b.is_ascii_digit()) { step.key.parse::<i32>().ok() } else { None };
        match index {
            Some(i) => expr.push_str(&format!("({i})")),
            None => expr.push_str(&sql.bind(step.key.clone())),
        }
    }
    let last_text = f.path.last().is_some_and(|s| s.as_text);
    Ok((format!("({expr})"), Some(if last_text { "text".into() } else { "jsonb".into() })))
}

/// A computed column (PostgREST): a function of the table's row type named like
/// the field, called on the row — `always_true(items)` read as `select=always_true`.
fn computed_column(src: &Source, name: &str) -> Option<String> {
    let (table, (cache, _)) = (src.columns?, src.ctx?);
    let row_type = [table.name.clone(), format!("{}.{}", table.schema, table.name), format!("{}.{}", ident(&table.schema), ident(&table.name))];
    let f = cache.overloads(&table.schema, name).iter().find(|f| f.args.len() == 1 && row_type.contains(&f.args[0].1) && !f.returns_set)?;
    Some(format!("{}({})", qualified(&f.schema, &f.name), src.alias))
}

fn cast(placeholder: &str, ty: &Option<String>) -> String {
    match ty {
        Some(t) => format!("{placeholder}::{t}"),
        None => placeholder.to_owned(),
    }
}

/// Columns of unknown type (scalar function results) are compared as text.
fn typed_lhs(lhs: String, ty: &Option<String>) -> String {
    if ty.is_none() {
        format!("{lhs}::text")
    } else {
        lhs
    }
}

fn array_type(ty: &Option<String>) -> Option<String> {
    ty.as_ref().map(|t| format!("{t}[]"))
}

/// An embed of this level named by a filter's field (`child_entities=is.null`), when
/// the field is not a column.
fn embed_named<'a>(src: &Source<'a>, f: &Filter) -> Option<&'a super::request::Embed> {
    if !f.field.path.is_empty() || src.columns.is_some_and(|t| t.column(&f.field.column).is_some()) {
        return None;
    }
    src.items.iter().find_map(|it| match it {
        SelectItem::Embed(e) if e.key() == f.field.column => Some(e),
        _ => None,
    })
}

/// Renders one filter.
fn filter_sql(sql: &mut Sql, src: &Source, f: &Filter) -> Result<String, RestError> {
    if let Some(e) = embed_named(src, f) {
        // PostgREST: `rel=is.null` keeps the rows without a related row (anti-join),
        // `rel=not.is.null` those with one (as !inner); nothing else applies to a
        // resource.
        let present = match (f.op, f.value.to_ascii_lowercase().as_str()) {
            (Op::Is, "null") => false,
            (Op::Is, "not_null") => true,
            _ => return Err(RestError::parse(format!("\"failed to parse filter ({})\"", f.value), "an embedded resource can only be filtered with is.null or not.is.null")),
        };
        let exists = embed_exists(sql, src, e)?;
        return Ok(if present != f.negate { exists } else { format!("NOT {exists}") });
    }
    let (lhs, ty) = field_expr(sql, src, &f.field)?;
    let lhs = typed_lhs(lhs, &ty);
    // A column whose domain has a text parser (PostgREST's data representations)
    // reads the filter's value through it.
    let parser = if f.field.path.is_empty() { src.rep(ty.as_deref()).and_then(|r| r.from_text.clone()) } else { None };
    let value = |p: &str| match &parser {
        Some(func) => format!("{func}({p})"),
        None => cast(p, &ty),
    };
    let cmp = |op: &str, sql: &mut Sql| -> String {
        match f.quantifier {
            None => {
                let p = sql.bind(f.value.clone());
                format!("{lhs} {op} {}", value(&p))
            }
            Some(q) => {
                let p = sql.bind(f.value.clone());
                let which = if q == Quantifier::Any { "ANY" } else { "ALL" };
                match &parser {
                    Some(func) => format!("{lhs} {op} {which}(ARRAY(SELECT {func}(_pgs_v) FROM unnest({p}::text[]) AS _pgs_v))"),
                    None => format!("{lhs} {op} {which}({})", cast(&p, &array_type(&ty))),
                }
            }
        }
    };
    let text_cmp = |op: &str, sql: &mut Sql, wildcard: bool| -> String {
        let v = if wildcard { f.value.replace('*', "%") } else { f.value.clone() };
        match f.quantifier {
            None => format!("{lhs}::text {op} {}", sql.bind(v)),
            Some(q) => {
                let which = if q == Quantifier::Any { "ANY" } else { "ALL" };
                // `{a*,b*}` is Postgres's array syntax: Postgres parses it (a
                // malformed list is its 22P02, a 400).
                format!("{lhs}::text {op} {which}({}::text[])", sql.bind(v))
            }
        }
    };
    let body = match f.op {
        Op::Eq => cmp("=", sql),
        Op::Neq => cmp("<>", sql),
        Op::Gt => cmp(">", sql),
        Op::Gte => cmp(">=", sql),
        Op::Lt => cmp("<", sql),
        Op::Lte => cmp("<=", sql),
        Op::Like => text_cmp("LIKE", sql, true),
        Op::Ilike => text_cmp("ILIKE", sql, true),
        Op::Match => text_cmp("~", sql, false),
        Op::Imatch => text_cmp("~*", sql, false),
        Op::Is => {
            let kw = match f.value.to_ascii_lowercase().as_str() {
                "null" => "NULL",
                "not_null" => "NOT NULL",
                "true" => "TRUE",
                "false" => "FALSE",
                "unknown" => "UNKNOWN",
                other => return Err(RestError::parse(format!("\"failed to parse filter (is.{other})\""), "is takes null, not_null, true, false or unknown")),
            };
            format!("{lhs} IS {kw}")
        }
        Op::IsDistinct => {
            let p = sql.bind(f.value.clone());
            format!("{lhs} IS DISTINCT FROM {}", value(&p))
        }
        Op::In => {
            let items = parse_list(&f.value)?;
            if items.is_empty() {
                "false".to_owned()
            } else {
                let p = sql.bind(array_literal(items.iter().map(String::as_str)));
                match &parser {
                    Some(func) => format!("{lhs} = ANY(ARRAY(SELECT {func}(_pgs_v) FROM unnest({p}::text[]) AS _pgs_v))"),
                    None => format!("{lhs} = ANY({})", cast(&p, &array_type(&ty))),
                }
            }
        }
        Op::Cs | Op::Cd | Op::Ov | Op::Sl | Op::Sr | Op::Nxl | Op::Nxr | Op::Adj => {
            let op = match f.op {
                Op::Cs => "@>",
                Op::Cd => "<@",
                Op::Ov => "&&",
                Op::Sl => "<<",
                Op::Sr => ">>",
                Op::Nxl => "&>",
                Op::Nxr => "&<",
                _ => "-|-",
            };
            // Arrays also accept PostgREST's (a,b) list form for ov.
            let v = if f.op == Op::Ov && f.value.starts_with('(') && ty.as_deref().is_some_and(|t| t.ends_with("[]")) {
                array_literal(parse_list(&f.value)?.iter().map(String::as_str))
            } else {
                f.value.clone()
            };
            let p = sql.bind(v);
            format!("{lhs} {op} {}", cast(&p, &ty))
        }
        Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts => {
            let func = match f.op {
                Op::Fts => "to_tsquery",
                Op::Plfts => "plainto_tsquery",
                Op::Phfts => "phraseto_tsquery",
                _ => "websearch_to_tsquery",
            };
            let lang = f.language.clone().map(|l| sql.bind(l) + "::regconfig");
            let q = sql.bind(f.value.clone());
            let query = match &lang {
                Some(l) => format!("{func}({l}, {q})"),
                None => format!("{func}({q})"),
            };
            let is_tsvector = ty.as_deref() == Some("tsvector");
            let doc = match (is_tsvector, &lang) {
                (true, _) => lhs.clone(),
                (false, Some(l)) => format!("to_tsvector({l}, {lhs}::text)"),
                (false, None) => format!("to_tsvector({lhs}::text)"),
            };
            format!("{doc} @@ {query}")
        }
    };
    Ok(if f.negate { format!("NOT ({body})") } else { body })
}

fn condition_sql(sql: &mut Sql, src: &Source, c: &Condition) -> Result<String, RestError> {
    stacker::maybe_grow(RED_ZONE, STACK_GROWTH, || condition_sql_here(sql, src, c))
}

fn condition_sql_here(sql: &mut Sql, src: &Source, c: &Condition) -> Result<String, RestError> {
    match c {
        Condition::Filter(f) => filter_sql(sql, src, f),
        Condition::Tree { or, negate, children } => {
            let mut parts = Vec::new();
            for ch in children {
                parts.push(condition_sql(sql, src, ch)?);
            }
            let joined = if parts.is_empty() { "true".to_owned() } else { format!("({})", parts.join(if *or { " OR " } else { " AND " })) };
            Ok(if *negate { format!("NOT {joined}") } else { joined })
        }
    }
}

/// `WHERE ...` for all conditions ("" when there are none).
pub fn where_sql(sql: &mut Sql, src: &Source, conditions: &[Condition]) -> Result<String, RestError> {
    if conditions.is_empty() {
        return Ok(String::new());
    }
    let mut parts = Vec::new();
    for c in conditions {
        parts.push(condition_sql(sql, src, c)?);
    }
    Ok(format!(" WHERE {}", parts.join(" AND ")))
}

/// `ORDER BY ...`; `select` is the level's select list, where related orders find
/// their embed.
fn order_sql(sql: &mut Sql, src: &Source, order: &[OrderTerm], select: &[SelectItem]) -> Result<String, RestError> {
    if order.is_empty() {
        return Ok(String::new());
    }
    let mut parts = Vec::new();
    for (i, o) in order.iter().enumerate() {
        let expr = match &o.relation {
            None => field_expr(sql, src, &o.field)?.0,
            Some(r) => related_order_expr(sql, src, r, &o.field, select, i)?,
        };
        let mut p = format!("{expr} {}", if o.desc { "DESC" } else { "ASC" });
        match o.nulls_first {
            Some(true) => p.push_str(" NULLS FIRST"),
            Some(false) => p.push_str(" NULLS LAST"),
            None => {}
        }
        parts.push(p);
    }
    Ok(format!(" ORDER BY {}", parts.join(", ")))
}

/// PostgREST's related order: a column of a to-one embed of this level
/// (`order=client(name)`), as a scalar subquery over the same join as the embed.
fn related_order_expr(sql: &mut Sql, parent: &Source, key: &str, field: &super::request::Field, select: &[SelectItem], n: usize) -> Result<String, RestError> {
    let not_embedded = || {
        RestError::new(
            pgrst::NOT_EMBEDDED,
            format!("'{key}' is not an embedded resource in this request"),
            None,
            Some(&format!("Verify that '{key}' is included in the 'select' query parameter.")),
        )
    };
    let e = select.iter().find(|it| matches!(it, SelectItem::Embed(e) if e.key() == key)).ok_or_else(not_embedded)?;
    let SelectItem::Embed(e) = e else { return Err(not_embedded()) };
    let (cache, q) = parent.ctx.ok_or_else(not_embedded)?;
    let parent_table = parent.columns.ok_or_else(not_embedded)?;
    let (child, rel) = embed::resolve(cache, parent_table, e)?;
    if !rel.is_to_one() {
        // A computed relationship is named by its function.
        let target = match &rel {
            embed::Rel::Computed(f) => f.name.as_str(),
            _ => child.name.as_str(),
        };
        return Err(RestError::new(
            pgrst::RELATED_ORDER,
            format!("A related order on '{key}' is not possible"),
            Some(format!("'{}' and '{target}' do not form a many-to-one or one-to-one relationship", parent_table.name)),
            None,
        ));
    }
    let alias = format!("_pgs_o{}_{n}", parent.path.len());
    let mut path = parent.path.clone();
    path.push(key.to_owned());
    // The row the embed shows: its own filters, order and offset apply here too.
    let scope = q.embeds.get(&path).cloned().unwrap_or_default();
    let src = Source { name: &child.name, columns: Some(child), alias: alias.clone(), ctx: Some((cache, q)), path, items: &e.select };
    let (col, _) = field_expr(sql, &src, field)?;
    let mut conds = vec![embed::join_condition(&rel, &parent.alias, &alias)];
    for c in &scope.conditions {
        conds.push(condition_sql(sql, &src, c)?);
    }
    // Its own `!inner` embeds must exist, as for the embed.
    for it in &e.select {
        if let SelectItem::Embed(n) = it {
            if n.inner {
                conds.push(embed_exists(sql, &src, n)?);
            }
        }
    }
    let ord = order_sql(sql, &src, &scope.order, &e.select)?;
    let offset = match scope.offset {
        Some(o) => format!(" OFFSET {}::bigint", sql.bind(o.to_string())),
        None => String::new(),
    };
    // The first row of its page (none with `limit=0`).
    let limit = if scope.limit == Some(0) { 0 } else { 1 };
    Ok(format!("(SELECT {col} FROM {} WHERE {}{ord}{offset} LIMIT {limit})", embed::from_item(&rel, child, &parent.alias, &alias), conds.join(" AND ")))
}

/// How many rows to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountMode {
    /// count(*) of the filtered relation.
    Exact,
    /// The planner's estimate (EXPLAIN).
    Planned,
    /// Exact up to DB_MAX_ROWS, the planner's estimate beyond (exact without a cap).
    Estimated,
}

impl CountMode {
    /// `Prefer: count=`.
    pub fn from_prefer(count: Option<&str>) -> Option<CountMode> {
        match count? {
            "planned" => Some(CountMode::Planned),
            "estimated" => Some(CountMode::Estimated),
            _ => Some(CountMode::Exact),
        }
    }
}

/// The outer SELECT over a row source `from` ("FROM ... _pgs_r"), producing
/// (body, row count, object, total) with the body or object rendered as `accept` asks.
fn wrap_rows(sql: &mut Sql, src: &Source, q: &QueryParams, from: &str, count: Option<CountMode>, page: bool, accept: Accept) -> Result<(), RestError> {
    let mut inner = Vec::new();
    let select = select_sql(sql, src, &q.select, &mut inner)?;
    let mut conds = Vec::new();
    for c in &q.conditions {
        conds.push(condition_sql(sql, src, c)?);
    }
    conds.extend(inner);
    let wh = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    let ord = order_sql(sql, src, &q.order, &q.select)?;
    let mut paging = String::new();
    if page {
        if let Some(l) = capped_limit(q.limit) {
            paging.push_str(&format!(" LIMIT {}::bigint", sql.bind(l.to_string())));
        }
        if let Some(o) = q.offset {
            paging.push_str(&format!(" OFFSET {}::bigint", sql.bind(o.to_string())));
        }
    }
    let max_rows = super::settings().max_rows;
    let total = match (count, max_rows) {
        (Some(CountMode::Exact), _) | (Some(CountMode::Estimated), None) => format!("(SELECT count(*) FROM {from}{wh})"),
        // Counted no further than one past the cap: beyond it the estimate is taken.
        (Some(CountMode::Estimated), Some(m)) => format!("(SELECT count(*) FROM (SELECT 1 FROM {from}{wh} LIMIT {}) _pgs_c)", m.saturating_add(1)),
        (Some(CountMode::Planned), _) | (None, _) => "NULL::bigint".to_owned(),
    };
    sql.estimate = match (count, max_rows) {
        (Some(CountMode::Planned), _) => Some(Estimate { explain: format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {from}{wh}"), above: None }),
        (Some(CountMode::Estimated), Some(m)) => Some(Estimate { explain: format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {from}{wh}"), above: Some(m) }),
        _ => None,
    };
    if accept == Accept::Json && count.is_none() {
        // A plain array: one JSON row each, joined by the gateway as json_agg would
        // (setting up an aggregate cost Postgres ~15% of a read by key).
        sql.json_rows = true;
        sql.push(&format!("SELECT {} FROM (SELECT {select} FROM {from}{wh}{ord}{paging}) _pgs_t", render::ROW_JSON));
        return Ok(());
    }
    let columns = render::columns(accept);
    sql.push(&format!("SELECT {columns}, {total} FROM (SELECT {select} FROM {from}{wh}{ord}{paging}) _pgs_t"));
    Ok(())
}

/// The request's `limit` within DB_MAX_ROWS (PostgREST's db-max-rows).
pub fn capped_limit(limit: Option<i64>) -> Option<i64> {
    match (limit, super::settings().max_rows) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (l, m) => l.or(m),
    }
}

/// GET / HEAD on a table or view, rendered as `accept`.
pub fn read(cache: &SchemaCache, table: &Table, q: &QueryParams, count: Option<CountMode>, accept: Accept) -> Result<Sql, RestError> {
    check_embed_scopes(q)?;
    let mut sql = Sql::default();
    let src = Source::top(table, cache, q);
    let from = format!("{} {R}", qualified(&table.schema, &table.name));
    wrap_rows(&mut sql, &src, q, &from, count, true, accept)?;
    Ok(sql)
}

/// RPC: call `f` with named arguments (`args`: name → JSON value) or one unnamed
/// json/jsonb argument (`whole_body`). A set of rows is rendered as `accept`; a
/// single value is always JSON.
pub fn call(
    cache: &SchemaCache,
    f: &Function,
    args: &[(String, Arg)],
    whole_body: Option<&str>,
    q: &QueryParams,
    count: Option<CountMode>,
    accept: Accept,
) -> Result<Sql, RestError> {
    let mut sql = Sql::default();
    let callee = callee(&mut sql, f, args, whole_body)?;
    // Rows of a table's type embed as that table's rows do (PostgREST).
    let relation = f.returns_relation.as_ref().and_then(|k| cache.tables.get(k));
    if relation.is_some() {
        check_embed_scopes(q)?;
    }
    let src = Source { name: &f.name, columns: relation.or(f.result.as_ref()), alias: R.to_owned(), ctx: relation.map(|_| (cache, q)), path: Vec::new(), items: &q.select };
    if f.returns_scalar && !f.returns_set {
        if accept == Accept::Csv {
            // PostgREST's CSV of a single value: its column name, then the value.
            csv_rows(&mut sql, &format!("SELECT {callee} AS pgrst_scalar"));
        } else {
            sql.push(&format!("SELECT to_json({callee})::text, 1::bigint, NULL::text, NULL::bigint"));
        }
    } else if f.returns_scalar {
        let wh = where_sql(&mut sql, &src, &q.conditions)?;
        let mut paging = String::new();
        if let Some(l) = capped_limit(q.limit) {
            paging.push_str(&format!(" LIMIT {}::bigint", sql.bind(l.to_string())));
        }
        if let Some(o) = q.offset {
            paging.push_str(&format!(" OFFSET {}::bigint", sql.bind(o.to_string())));
        }
        // The values under PostgREST's column name for them. Counted: the function
        // runs once (materialized), counted, then paged.
        let (rows, total) = if count.is_some() {
            sql.push(&format!("WITH _pgs_s AS MATERIALIZED (SELECT {R} AS pgrst_scalar FROM {callee} AS {R}{wh}) "));
            (format!("SELECT pgrst_scalar FROM _pgs_s{paging}"), "(SELECT count(*) FROM _pgs_s)")
        } else {
            (format!("SELECT {R} AS pgrst_scalar FROM {callee} AS {R}{wh}{paging}"), "NULL::bigint")
        };
        if accept == Accept::Csv {
            csv_rows_counted(&mut sql, &rows, total);
        } else {
            // Asked for as one object: the single value itself (PostgREST), else the
            // singular check refuses the result (and rolls its writes back).
            let object =
                if matches!(accept, Accept::Object | Accept::ObjectStripped) { "CASE WHEN count(*) = 1 THEN (json_agg(_pgs_t.pgrst_scalar) -> 0)::text END" } else { "NULL::text" };
            sql.push(&format!("SELECT coalesce(json_agg(_pgs_t.pgrst_scalar), '[]')::text, count(*), {object}, {total} FROM ({rows}) _pgs_t"));
        }
    } else if !f.returns_set {
        // One row: `select=` (columns, embeds, representations) applies as to a
        // table's rows (PostgREST); `*` names the columns of a composite result and
        // the OUT / TABLE parameters of a scalar one alike.
        let mut inner = Vec::new();
        let select = select_sql(&mut sql, &src, &q.select, &mut inner)?;
        let wh = if inner.is_empty() { String::new() } else { format!(" WHERE {}", inner.join(" AND ")) };
        if accept == Accept::Csv {
            // The one row as CSV (a header and its line), as PostgREST renders it.
            csv_rows(&mut sql, &format!("SELECT {select} FROM {callee} AS {R}{wh}"));
        } else {
            sql.push(&format!(
                "SELECT coalesce((SELECT row_to_json(_pgs_o)::text FROM (SELECT {select} FROM {callee} AS {R}{wh}) _pgs_o), 'null'), 1::bigint, NULL::text, NULL::bigint"
            ));
        }
    } else if count.is_some() {
        // Counted: the function runs once, its rows materialized for the count and
        // the page alike (a function may write: it must not run twice).
        sql.push(&format!("WITH _pgs_s AS MATERIALIZED (SELECT * FROM {callee}) "));
        wrap_rows(&mut sql, &src, q, &format!("_pgs_s AS {R}"), count, true, accept)?;
    } else {
        let from = format!("{callee} AS {R}");
        wrap_rows(&mut sql, &src, q, &from, count, true, accept)?;
    }
    Ok(sql)
}

/// `schema.f(args)`: the named arguments (VARIADIC last), or the one unnamed
/// argument taking the whole body, each a bind parameter cast to its type.
fn callee(sql: &mut Sql, f: &Function, args: &[(String, Arg)], whole_body: Option<&str>) -> Result<String, RestError> {
    let mut call_args = Vec::new();
    if let Some(body) = whole_body {
        let (_, ty) = &f.args[0];
        let p = sql.bind(body.to_owned());
        call_args.push(format!("{p}::{ty}"));
    } else {
        let variadic = f.args.last().filter(|_| f.variadic).map(|(n, _)| n.as_str());
        // Postgres takes the VARIADIC argument last.
        let mut variadic_arg = None;
        for (name, value) in args {
            let (_, ty) = f.args.iter().find(|(n, _)| n == name).ok_or_else(|| {
                let given: Vec<&str> = args.iter().map(|(n, _)| n.as_str()).collect();
                no_function(&f.schema, &f.name, &given, std::slice::from_ref(f), &[], false)
            })?;
            if Some(name.as_str()) == variadic {
                // VARIADIC: a JSON array (the body's, or the repeated query parameter's
                // values) becomes the array argument; one value an array of one.
                // JSON null: a NULL array (PostgREST passes the body's value).
                variadic_arg = Some(match Arg::variadic(std::slice::from_ref(value)) {
                    None => format!("VARIADIC {} := NULL::{ty}", ident(name)),
                    Some(items) => {
                        let p = sql.bind(items);
                        format!("VARIADIC {} := ARRAY(SELECT json_array_elements_text({p}::json))::{ty}", ident(name))
                    }
                });
                continue;
            }
            let p = sql.bind(value.text().map(str::to_owned));
            call_args.push(format!("{} := {p}::{ty}", ident(name)));
        }
        call_args.extend(variadic_arg);
    }
    Ok(format!("{}({})", qualified(&f.schema, &f.name), call_args.join(", ")))
}

/// A function returning a media type's domain, answered as that media type: its
/// value's text (a bytea's as plain hex, whatever `bytea_output` says) in the
/// 4-column shape.
pub fn call_value(f: &Function, args: &[(String, Arg)], whole_body: Option<&str>) -> Result<Sql, RestError> {
    let mut sql = Sql::default();
    let callee = callee(&mut sql, f, args, whole_body)?;
    let value = if f.media_bytea { format!("encode(({callee})::bytea, 'hex')") } else { format!("({callee})::text") };
    sql.push(&format!("SELECT {value}, 1::bigint, NULL::text, NULL::bigint"));
    Ok(sql)
}

/// A function's result as CSV: the rows of `rows` (a SELECT) in the 4-column shape.
fn csv_rows(sql: &mut Sql, rows: &str) {
    csv_rows_counted(sql, rows, "NULL::bigint");
}

/// [`csv_rows`] with the total of the whole result (`total`, a bigint expression).
fn csv_rows_counted(sql: &mut Sql, rows: &str, total: &str) {
    sql.push(&format!("SELECT {}, count(*), NULL::text, {total} FROM ({rows}) _pgs_t", render::csv()));
}

/// PGRST205 with PostgREST's fuzzy hint of another table or view of the schema.
pub fn no_table(cache: &SchemaCache, schema: &str, name: &str) -> RestError {
    let all: Vec<&str> = cache.tables.keys().filter(|(s, _)| s == schema).map(|(_, n)| n.as_str()).collect();
    let mut e = RestError::no_relation(schema, name);
    if let Some(t) = super::fuzzy::best(&all, name, 0.75) {
        e.hint = serde_json::Value::String(format!("Perhaps you meant the table '{schema}.{t}'"));
    }
    e
}

/// PGRST202 as PostgREST words it: no function `schema.name` takes `args` (given in
/// the request's order). The hint is PostgREST's fuzzy guess: another function of the
/// schema (`all_names`) when none has this name, else the closest argument list of
/// its `overloads`. `post_json`: a POST with a JSON body (one unnamed json/jsonb
/// parameter would also have taken it).
pub fn no_function(schema: &str, name: &str, args: &[&str], overloads: &[Function], all_names: &[&str], post_json: bool) -> RestError {
    let func = format!("{schema}.{name}");
    // Each name once (PostgREST reads a set of names), at most 100 of them.
    let mut distinct: Vec<&str> = Vec::new();
    for a in args {
        if distinct.len() == 100 {
            break;
        }
        if !distinct.contains(a) {
            distinct.push(a);
        }
    }
    distinct.sort_unstable();
    let args = distinct.as_slice();
    let prms = args.join(", ");
    let message = if args.is_empty() {
        format!("Could not find the function {func} without parameters in the schema cache")
    } else {
        format!("Could not find the function {func}({prms}) in the schema cache")
    };
    let searched = if args.is_empty() { " without parameters".to_owned() } else { format!(" with parameter{} {prms}", if args.len() > 1 { "s" } else { "" }) };
    let json = if post_json { " or with a single unnamed json/jsonb parameter" } else { "" };
    let details = format!("Searched for the function {func}{searched}{json}, but no matches were found in the schema cache.");
    let list = |names: &mut Vec<&str>| {
        names.sort_unstable();
        format!("({})", names.join(", "))
    };
    let hint = if overloads.is_empty() {
        super::fuzzy::best(all_names, name, 0.75).map(|p| format!("Perhaps you meant to call the function {schema}.{p}"))
    } else {
        let lists: Vec<String> = overloads.iter().map(|f| list(&mut f.args.iter().map(|(n, _)| n.as_str()).collect())).collect();
        let refs: Vec<&str> = lists.iter().map(String::as_str).collect();
        super::fuzzy::best(&refs, &list(&mut args.to_vec()), 0.33).map(|p| format!("Perhaps you meant to call the function {func}{p}"))
    };
    RestError::new(pgrst::NO_FUNCTION, message, Some(details), hint.as_deref())
}
