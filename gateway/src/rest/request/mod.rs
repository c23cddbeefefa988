//! Request: the query string → [`QueryParams`]. Pure parsing, no IO, no schema
//! knowledge (names are checked later, in `plan`).
//!
//! Grammar (PostgREST's): `select=a,b:alias,c::text,d->e->>f`, filters
//! `col=[not.]op[(any|all)].value`, logic trees `or=(a.eq.1,and(b.gt.2,c.is.null))`,
//! `order=a.desc.nullslast,b`, `limit`, `offset`, `columns`, `on_conflict`.
//! Here: the parsed types and the query string's dispatch; `select.rs` parses
//! `select=` and `order=`, `filter.rs` filters, logic trees and lists.

use super::error::RestError;
use crate::error::code::pgrst;

pub mod api;
pub mod args;
mod filter;
mod grammar;
mod parsec;
pub mod rows;
mod select;
pub use filter::*;
pub use select::*;

/// Deepest nesting of embeds (`a(b(c(...)))`) and of logic trees
/// (`or=(and(or(...)))`) a request may use. The parsers and the planner recurse once
/// per level, so this bounds their stack; deeper requests get PGRST100.
pub const MAX_DEPTH: usize = 24;

/// Most steps of one JSON path (`data->a->b...`): each becomes an operator Postgres
/// nests, so very long paths reach its stack limit.
pub const MAX_JSON_PATH: usize = 64;
/// Levels of resource embedding in one select.
pub const MAX_EMBED_DEPTH: usize = 8;

/// Longest query string the REST parser reads (the URI itself is capped lower by
/// hyper; this keeps the parser's cost per request bounded in any case).
pub const MAX_QUERY_LEN: usize = 64 * 1024;

fn too_deep(what: &str) -> RestError {
    RestError::parse(format!("\"failed to parse {what}\": nesting deeper than {MAX_DEPTH} levels"), format!("{what} may nest at most {MAX_DEPTH} levels"))
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    Is,
    IsDistinct,
    In,
    Cs,
    Cd,
    Ov,
    Sl,
    Sr,
    Nxl,
    Nxr,
    Adj,
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "match" => Op::Match,
            "imatch" => Op::Imatch,
            "is" => Op::Is,
            "isdistinct" => Op::IsDistinct,
            "in" => Op::In,
            "cs" => Op::Cs,
            "cd" => Op::Cd,
            "ov" => Op::Ov,
            "sl" => Op::Sl,
            "sr" => Op::Sr,
            "nxl" => Op::Nxl,
            "nxr" => Op::Nxr,
            "adj" => Op::Adj,
            "fts" => Op::Fts,
            "plfts" => Op::Plfts,
            "phfts" => Op::Phfts,
            "wfts" => Op::Wfts,
            _ => return None,
        })
    }
    /// Operators that accept `(any)` / `(all)`.
    fn quantifiable(self) -> bool {
        matches!(self, Op::Eq | Op::Neq | Op::Gt | Op::Gte | Op::Lt | Op::Lte | Op::Like | Op::Ilike | Op::Match | Op::Imatch)
    }
}

/// `(any)` / `(all)` after an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    Any,
    All,
}

/// One step of a JSON path: `->key` (json) or `->>key` (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    /// `->>` (text) instead of `->`.
    pub as_text: bool,
    /// Key, or array index when all digits (optionally negative).
    pub key: String,
}

/// A column reference with an optional JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Column name.
    pub column: String,
    /// JSON path after the column.
    pub path: Vec<JsonStep>,
}

/// `col.op.value` with negation, quantifier and (for fts) a language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The column (and JSON path).
    pub field: Field,
    /// `not.` prefix.
    pub negate: bool,
    /// Operator.
    pub op: Op,
    /// `(any)` / `(all)`.
    pub quantifier: Option<Quantifier>,
    /// fts language, e.g. `fts(english)`.
    pub language: Option<String>,
    /// Raw value (list values are parsed by the planner).
    pub value: String,
}

/// A node of an `and=(...)` / `or=(...)` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A leaf.
    Filter(Filter),
    /// A boolean combination.
    Tree {
        /// `or` instead of `and`.
        or: bool,
        /// `not.` prefix.
        negate: bool,
        /// Children.
        children: Vec<Condition>,
    },
}

/// One item of `select=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`.
    Star,
    /// A column, maybe with path, alias and cast.
    Field {
        /// The column.
        field: Field,
        /// `alias:`.
        alias: Option<String>,
        /// `::type`.
        cast: Option<String>,
    },
    /// An embedded resource: `alias:name!hint!inner(select...)`.
    Embed(Embed),
}

/// A resource embedded through a foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    /// Table (or view) name.
    pub name: String,
    /// `alias:`; the JSON key (default: the name).
    pub alias: Option<String>,
    /// `!hint`: a constraint name, a column, or a junction table.
    pub hint: Option<String>,
    /// `!inner`: keep only parents that have a match.
    pub inner: bool,
    /// The embedded select list.
    pub select: Vec<SelectItem>,
    /// `...name(cols)`: the columns are spread into the parent's row (arrays of
    /// values for a to-many relationship).
    pub spread: bool,
}

impl Embed {
    /// The key this embed has in JSON and in `alias.col=...` parameters.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// Filters, order and paging of one embedded resource (`items.qty=gt.1`,
/// `items.order=id.desc`, `items.limit=2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Filters and trees, ANDed.
    pub conditions: Vec<Condition>,
    /// Order.
    pub order: Vec<OrderTerm>,
    /// limit.
    pub limit: Option<i64>,
    /// offset.
    pub offset: Option<i64>,
}

/// One term of `order=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    /// `clients(name)`: the key of a to-one embed whose column orders the rows.
    pub relation: Option<String>,
    /// The column.
    pub field: Field,
    /// `.desc`.
    pub desc: bool,
    /// `.nullsfirst` → Some(true), `.nullslast` → Some(false).
    pub nulls_first: Option<bool>,
}

/// Everything the query string says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    /// `select=`; empty = `*`.
    pub select: Vec<SelectItem>,
    /// Filters and logic trees, all ANDed.
    pub conditions: Vec<Condition>,
    /// `order=`.
    pub order: Vec<OrderTerm>,
    /// `limit=`.
    pub limit: Option<i64>,
    /// `offset=`.
    pub offset: Option<i64>,
    /// `columns=` (insert / upsert).
    pub columns: Option<Vec<String>>,
    /// `on_conflict=`.
    pub on_conflict: Option<Vec<String>>,
    /// Other parameters (RPC arguments on GET).
    pub rest: Vec<(String, String)>,
    /// Parameters of embedded resources, by path of embed keys.
    pub embeds: std::collections::BTreeMap<Vec<String>, Scope>,
}

/// Embedded resources named in filters, orders or limits by their relation name
/// although `select=` gave them an alias (`the_tasks:tasks(..)` with
/// `tasks.limit=1`): still honoured, as PostgREST's default
/// `url-use-legacy-target-names` does, by moving those parameters to the alias.
/// Returns PostgREST's deprecation warning for the first such name.
pub fn legacy_targets(q: &mut QueryParams) -> Option<String> {
    let mut warning = None;
    let paths: Vec<Vec<String>> = q.embeds.keys().cloned().collect();
    for path in paths {
        let mut items: &[SelectItem] = &q.select;
        let mut fixed = Vec::with_capacity(path.len());
        for key in &path {
            let by_key = items.iter().find(|it| matches!(it, SelectItem::Embed(e) if e.key() == key));
            let by_name = || items.iter().find(|it| matches!(it, SelectItem::Embed(e) if e.alias.is_some() && e.name == *key));
            match by_key.or_else(by_name) {
                Some(SelectItem::Embed(e)) => {
                    if e.key() != key {
                        warning.get_or_insert_with(|| {
                            format!(
                                "299 pgstack \"Embedded resource was referenced by relation name even though it has an alias. This is deprecated and will stop working in a future release. Update `{key}` to `{}` in query string filters, orders or limits.\"",
                                e.key()
                            )
                        });
                    }
                    fixed.push(e.key().to_owned());
                    items = &e.select;
                }
                // Not embedded at all: the planner refuses it (PGRST108).
                _ => break,
            }
        }
        if fixed.len() == path.len() && fixed != path {
            let Some(scope) = q.embeds.remove(&path) else { continue };
            let into = q.embeds.entry(fixed).or_default();
            into.conditions.extend(scope.conditions);
            if into.order.is_empty() {
                into.order = scope.order;
            }
            into.limit = into.limit.or(scope.limit);
            into.offset = into.offset.or(scope.offset);
        }
    }
    warning
}

/// Parses a raw query string. `rpc_args` keeps unknown `name=value` pairs as
/// arguments instead of reading them as filters (GET /rpc).
pub fn parse_query(raw: &str, rpc_args: bool) -> Result<QueryParams, RestError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(RestError::parse("\"query string too long\"", format!("at most {MAX_QUERY_LEN} bytes")));
    }
    let mut q = QueryParams::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        // A refused parameter gets PostgREST's own message when its grammar refuses
        // it too; `columns` and `on_conflict` are checked by that grammar first.
        if k == "columns" || k == "on_conflict" {
            if let Some(e) = grammar::explain(&k, &v, rpc_args) {
                return Err(e);
            }
        }
        parse_param(&mut q, &k, &v, rpc_args).map_err(|e| grammar::explain(&k, &v, rpc_args).unwrap_or(e))?;
    }
    Ok(q)
}

/// One parameter into `q`.
fn parse_param(q: &mut QueryParams, k: &str, v: &str, rpc_args: bool) -> Result<(), RestError> {
    // `items.order=...`, `items.qty=gt.1`: parameters of an embedded resource.
    if let Some((path, last)) = embed_key(k) {
        let scope = q.embeds.entry(path).or_default();
        return apply_scope(scope, &last, v);
    }
    match k {
        "select" => {
            check_nesting(v, "select")?;
            q.select = parse_select(v, 0)?
        }
        "columns" => q.columns = Some(split_names(v)),
        "on_conflict" => q.on_conflict = Some(split_names(v)),
        "order" | "limit" | "offset" | "or" | "and" | "not.or" | "not.and" => {
            let mut scope = Scope::default();
            apply_scope(&mut scope, k, v)?;
            q.conditions.extend(scope.conditions);
            if !scope.order.is_empty() {
                q.order = scope.order;
            }
            q.limit = scope.limit.or(q.limit);
            q.offset = scope.offset.or(q.offset);
        }
        _ if rpc_args && !looks_like_filter(v) => q.rest.push((k.to_owned(), v.to_owned())),
        _ => q.conditions.push(Condition::Filter(parse_filter(k, v)?)),
    }
    Ok(())
}

/// `a.b.col` → (["a", "b"], "col"); `not.or` and plain keys → None.
fn embed_key(k: &str) -> Option<(Vec<String>, String)> {
    if k.starts_with("not.") || k.contains("->") {
        return None;
    }
    let parts: Vec<&str> = split_top(k, '.');
    if parts.len() < 2 || parts.len() > MAX_DEPTH + 2 {
        return None;
    }
    // `items.not.or` keeps its `not.` with the last part.
    let (path, last) = if parts.len() >= 3 && parts[parts.len() - 2] == "not" {
        (&parts[..parts.len() - 2], format!("not.{}", parts[parts.len() - 1]))
    } else {
        (&parts[..parts.len() - 1], parts[parts.len() - 1].to_owned())
    };
    Some((path.iter().map(|s| unquote(s)).collect(), last))
}

/// Applies one parameter to a scope (top level or embedded).
fn apply_scope(scope: &mut Scope, k: &str, v: &str) -> Result<(), RestError> {
    match k {
        "order" => scope.order = parse_order(v)?,
        "limit" => scope.limit = Some(parse_nonneg("limit", v)?),
        "offset" => scope.offset = Some(parse_nonneg("offset", v)?),
        "or" | "and" | "not.or" | "not.and" => {
            let negate = k.starts_with("not.");
            check_nesting(v, "logic tree")?;
            // As PostgREST's parser, the tree ends at the parenthesis that closes it
            // (anything after it is not read).
            let inner = v
                .strip_prefix('(')
                .and_then(|s| closing_paren(s).map(|end| &s[..end]))
                .ok_or_else(|| RestError::parse(format!("\"failed to parse logic tree ({v})\""), "logic trees look like or=(a.eq.1,b.eq.2)"))?;
            scope.conditions.push(Condition::Tree { or: k.ends_with("or"), negate, children: parse_tree_items(inner, 1)? });
        }
        _ => scope.conditions.push(Condition::Filter(parse_filter(k, v)?)),
    }
    Ok(())
}

fn looks_like_filter(v: &str) -> bool {
    let v = v.strip_prefix("not.").unwrap_or(v);
    let op = v.split('.').next().unwrap_or("");
    let op = op.split('(').next().unwrap_or("");
    Op::parse(op).is_some() && v.contains('.')
}

fn parse_nonneg(name: &str, v: &str) -> Result<i64, RestError> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        // PostgREST: a negative offset starts at the first row.
        Ok(_) if name.ends_with("offset") => Ok(0),
        // PostgREST: a negative limit is an unsatisfiable range, not a parse error.
        Ok(_) if name.ends_with("limit") => {
            Err(RestError::new(pgrst::INVALID_RANGE, "Requested range not satisfiable", Some("Limit should be greater than or equal to zero.".to_owned()), None))
        }
        _ => Err(RestError::parse(format!("\"failed to parse {name} parameter ({v})\""), "expected a non-negative integer")),
    }
}

fn split_names(v: &str) -> Vec<String> {
    split_top(v, ',').into_iter().map(|s| unquote(s.trim())).filter(|s| !s.is_empty()).collect()
}

/// A `"quoted"` name or value as PostgREST reads it (a backslash takes the next
/// character as it is); anything else unchanged.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            out
        }
        None => s.to_owned(),
    }
}

/// Walks `s` outside double quotes (a backslash escapes inside them), calling `f`
/// with each character's index, the character and the nesting depth before it
/// (parentheses, and braces when `braces`); `f` returns true to stop.
fn walk_top(s: &str, braces: bool, mut f: impl FnMut(usize, char, i32) -> bool) {
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            _ => {
                if f(i, c, depth) {
                    return;
                }
                match c {
                    '(' => depth += 1,
                    '{' if braces => depth += 1,
                    ')' => depth -= 1,
                    '}' if braces => depth -= 1,
                    _ => {}
                }
            }
        }
    }
}

/// How deep parentheses nest in `s` (outside double quotes), in one pass: checked
/// before a recursive parse, which splits each level again (a 5 000-deep tree cost
/// ~1.8 ms of CPU to refuse at the depth limit).
fn nesting(s: &str) -> i32 {
    let mut max = 0;
    walk_top(s, false, |_, c, depth| {
        max = max.max(depth + i32::from(c == '('));
        false
    });
    max
}

/// Refuses `s` when its parentheses nest deeper than a parse of `what` could accept
/// (MAX_DEPTH levels, one more for a list or a function's parentheses inside the
/// deepest, one for the outer parenthesis).
fn check_nesting(s: &str, what: &str) -> Result<(), RestError> {
    if nesting(s) > MAX_DEPTH as i32 + 2 {
        return Err(too_deep(what));
    }
    Ok(())
}

/// Where the parenthesis closing an opened one is in `s` (quotes and nesting skipped).
fn closing_paren(s: &str) -> Option<usize> {
    let mut at = None;
    walk_top(s, false, |i, c, depth| {
        let found = c == ')' && depth == 0;
        if found {
            at = Some(i);
        }
        found
    });
    at
}

/// Splits on `sep` outside parentheses, double quotes and the braces of a Postgres
/// array value (`arr.cs.{1,2,3}` inside a logic tree).
pub fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start) = (Vec::new(), 0usize);
    walk_top(s, true, |i, c, depth| {
        if c == sep && depth == 0 {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        false
    });
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_with_negation_quantifiers_and_languages() {
        let f = parse_filter("status", "not.eq.active").unwrap();
        assert!(f.negate);
        assert_eq!((f.op, f.value.as_str()), (Op::Eq, "active"));
        let f = parse_filter("name", "like(any).{a*,b*}").unwrap();
        assert_eq!(f.quantifier, Some(Quantifier::Any));
        let f = parse_filter("doc", "fts(english).cat & dog").unwrap();
        assert_eq!(f.language.as_deref(), Some("english"));
        let f = parse_filter("data->a->>b", "eq.1.5").unwrap();
        assert_eq!(f.field.column, "data");
        assert_eq!(f.field.path.len(), 2);
        assert!(f.field.path[1].as_text);
        assert_eq!(f.value, "1.5");
        assert!(parse_filter("x", "nope.1").is_err());
        assert!(parse_filter("doc", "fts(english);drop.x").is_err());
        assert!(parse_filter("doc", "fts(eng)lish.x").is_err());
        assert!(parse_filter("x", "eq").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_in_one_pass() {
        let tree = |n: usize| format!("{}a.eq.1{}", "or(".repeat(n), ")".repeat(n));
        let deep = format!("({})", tree(5000));
        let err = parse_query(&format!("or={deep}"), false).unwrap_err();
        assert!(format!("{err:?}").contains("nesting deeper than"), "{err:?}");
        let select = format!("id,{}", (0..5000).map(|i| format!("e{i}(")).collect::<String>() + &")".repeat(5000));
        let err = parse_query(&format!("select={select}"), false).unwrap_err();
        assert!(format!("{err:?}").contains("nesting deeper than"), "{err:?}");
        // The deepest accepted: MAX_DEPTH levels, a list inside the last, quoted parentheses.
        let ok = format!("or=({}a.in.(1,2),b.eq.\"((((\"{})", "and(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
        parse_query(&ok, false).unwrap();
        let ok = format!("select=id,{}", (0..8).map(|i| format!("e{i}(")).collect::<String>() + "id" + &")".repeat(8));
        parse_query(&ok, false).unwrap();
    }

    #[test]
    fn logic_trees_nest() {
        let q = parse_query("or=(a.eq.1,and(b.gt.2,c.not.is.null),not.or(d.in.(1,2),e.eq.x))", false).unwrap();
        let Condition::Tree { or, children, .. } = &q.conditions[0] else { panic!() };
        assert!(or);
        assert_eq!(children.len(), 3);
        let Condition::Tree { or: false, children: inner, .. } = &children[1] else { panic!() };
        let Condition::Filter(f) = &inner[1] else { panic!() };
        assert!(f.negate && f.op == Op::Is);
        let Condition::Tree { negate: true, children: last, .. } = &children[2] else { panic!() };
        let Condition::Filter(f) = &last[0] else { panic!() };
        assert_eq!(f.value, "(1,2)");
    }

    #[test]
    fn aggregates_are_refused_as_postgrest_does_by_default() {
        for sel in ["count()", "total:count()", "count()::int", "id.count()", "price.sum()::int", "price::numeric.avg()", "c:amount.max()", "b.min()", "rel(x.sum())"] {
            let e = parse_query(&format!("select={sel}"), false).expect_err(sel);
            assert_eq!(e.code, "PGRST123", "{sel}");
        }
        for sel in ["client(id)", "rel()", "count", "items(count)", "a:b(c)"] {
            assert!(parse_query(&format!("select={sel}"), false).is_ok(), "{sel}");
        }
    }

    #[test]
    fn a_cast_with_a_length_is_a_syntax_error_not_an_embed() {
        for sel in ["name::varchar(10)", "a:name::numeric(10,2)", "id,name::char(3)"] {
            let e = parse_query(&format!("select={sel}"), false).expect_err(sel);
            assert_eq!(e.code, "PGRST100", "{sel}: {e:?}");
            assert!(e.details.as_str().is_some_and(|d| d.contains("unexpected '('")), "{sel}: PostgREST's parser message: {:?}", e.details);
        }
    }

    #[test]
    fn embedding_nests_at_most_eight_levels() {
        let nest = |n: usize| format!("select={}id{}", "a(".repeat(n), ")".repeat(n));
        assert!(parse_query(&nest(8), false).is_ok());
        let e = parse_query(&nest(9), false).unwrap_err();
        assert_eq!(e.code, "PGRST100");
    }

    #[test]
    fn select_order_and_paging() {
        let q = parse_query("select=id,full:name,price::text,data->>k&order=a.desc.nullslast,b&limit=10&offset=5", false).unwrap();
        assert_eq!(q.select.len(), 4);
        assert!(matches!(&q.select[1], SelectItem::Field { alias: Some(a), .. } if a == "full"));
        assert!(matches!(&q.select[2], SelectItem::Field { cast: Some(c), .. } if c == "text"));
        assert_eq!(q.order[0], OrderTerm { relation: None, field: Field { column: "a".into(), path: vec![] }, desc: true, nulls_first: Some(false) });
        assert_eq!((q.limit, q.offset), (Some(10), Some(5)));
        let related = parse_query("order=client(name).desc.nullsfirst,id", false).unwrap();
        assert_eq!(related.order[0], OrderTerm { relation: Some("client".into()), field: Field { column: "name".into(), path: vec![] }, desc: true, nulls_first: Some(true) });
        assert_eq!(related.order[1].relation, None);
        assert!(parse_query("limit=-1", false).is_err());
        let q = parse_query("select=id,buyer:customers!orders_customer_id_fkey(name),items!inner(*)&items.qty=gt.1&items.order=id.desc&items.limit=2", false).unwrap();
        let SelectItem::Embed(e) = &q.select[1] else { panic!() };
        assert_eq!((e.name.as_str(), e.key(), e.hint.as_deref(), e.inner), ("customers", "buyer", Some("orders_customer_id_fkey"), false));
        let SelectItem::Embed(e) = &q.select[2] else { panic!() };
        assert!(e.inner && e.select == vec![SelectItem::Star]);
        let scope = &q.embeds[&vec!["items".to_owned()]];
        assert_eq!((scope.conditions.len(), scope.order.len(), scope.limit), (1, 1, Some(2)));
    }

    #[test]
    fn form_encoding_and_lists() {
        let q = parse_query("name=eq.a+b&columns=%22a%22,%22b%22", false).unwrap();
        let Condition::Filter(f) = &q.conditions[0] else { panic!() };
        assert_eq!(f.value, "a b");
        assert_eq!(q.columns, Some(vec!["a".into(), "b".into()]));
        assert_eq!(parse_list("(1,\"a,b\",c)").unwrap(), vec!["1", "a,b", "c"]);
        assert!(parse_list("()").unwrap().is_empty());
    }

    #[test]
    fn rpc_arguments_stay_arguments() {
        let q = parse_query("term=laptop&limit=10&price=gt.5", true).unwrap();
        assert_eq!(q.rest, vec![("term".into(), "laptop".into())]);
        assert_eq!(q.conditions.len(), 1);
    }
}
