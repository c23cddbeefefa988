//! Request: query string + headers → [`ApiRequest`]. Pure parsing, no IO, no schema
//! knowledge (names are checked later, in `plan`).
//!
//! Grammar (PostgREST's): `select=a,b:alias,c::text,d->e->>f`, filters
//! `col=[not.]op[(any|all)].value`, logic trees `or=(a.eq.1,and(b.gt.2,c.is.null))`,
//! `order=a.desc.nullslast,b`, `limit`, `offset`, `columns`, `on_conflict`.

use axum::http::StatusCode;

use super::error::RestError;

/// Deepest nesting of embeds (`a(b(c(...)))`) and of logic trees
/// (`or=(and(or(...)))`) a request may use. The parsers and the planner recurse once
/// per level, so this bounds their stack; deeper requests get PGRST100.
pub const MAX_DEPTH: usize = 24;

/// Most steps of one JSON path (`data->a->b...`): each becomes an operator Postgres
/// nests, so very long paths reach its stack limit.
pub const MAX_JSON_PATH: usize = 64;

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

/// Parses a raw query string. `rpc_args` keeps unknown `name=value` pairs as
/// arguments instead of reading them as filters (GET /rpc).
pub fn parse_query(raw: &str, rpc_args: bool) -> Result<QueryParams, RestError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(RestError::parse("\"query string too long\"", format!("at most {MAX_QUERY_LEN} bytes")));
    }
    let mut q = QueryParams::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        // `items.order=...`, `items.qty=gt.1`: parameters of an embedded resource.
        if let Some((path, last)) = embed_key(&k) {
            let scope = q.embeds.entry(path).or_default();
            apply_scope(scope, &last, &v)?;
            continue;
        }
        match k.as_str() {
            "select" => q.select = parse_select(&v, 0)?,
            "columns" => q.columns = Some(split_names(&v)),
            "on_conflict" => q.on_conflict = Some(split_names(&v)),
            "order" | "limit" | "offset" | "or" | "and" | "not.or" | "not.and" => {
                let mut scope = Scope::default();
                apply_scope(&mut scope, &k, &v)?;
                q.conditions.extend(scope.conditions);
                if !scope.order.is_empty() {
                    q.order = scope.order;
                }
                q.limit = scope.limit.or(q.limit);
                q.offset = scope.offset.or(q.offset);
            }
            _ if rpc_args && !looks_like_filter(&v) => q.rest.push((k, v)),
            _ => q.conditions.push(Condition::Filter(parse_filter(&k, &v)?)),
        }
    }
    Ok(q)
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
            let inner = v
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
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
        // PostgREST: a negative limit is an unsatisfiable range, not a parse error.
        Ok(_) if name.ends_with("limit") => Err(RestError::new(
            axum::http::StatusCode::RANGE_NOT_SATISFIABLE,
            "PGRST103",
            "Requested range not satisfiable",
            Some("Limit should be greater than or equal to zero.".to_owned()),
            None,
        )),
        _ => Err(RestError::parse(format!("\"failed to parse {name} parameter ({v})\""), "expected a non-negative integer")),
    }
}

fn split_names(v: &str) -> Vec<String> {
    split_top(v, ',').into_iter().map(|s| unquote(s.trim())).filter(|s| !s.is_empty()).collect()
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => s.to_owned(),
    }
}

/// Splits on `sep` outside parentheses and double quotes.
pub fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start, mut escaped) = (Vec::new(), 0i32, false, 0usize, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `col`, `col->a->>b`, `"quoted col"`.
pub fn parse_field(s: &str) -> Result<Field, RestError> {
    let s = s.trim();
    let mut parts = Vec::new();
    let mut rest = s;
    // Column name ends at the first arrow outside quotes.
    let col_end = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"').map(|i| i + 2).unwrap_or(rest.len()),
        None => rest.find("->").unwrap_or(rest.len()),
    };
    let raw_col = rest[..col_end].trim();
    if raw_col.chars().any(char::is_control) || (!raw_col.starts_with('"') && raw_col != "*" && !raw_col.is_empty() && !is_field_name(raw_col)) {
        return Err(RestError::parse(format!("\"failed to parse field ({s})\""), "unquoted names take letters, digits, _, $ and -; quote others: \"my.col\""));
    }
    let column = unquote(raw_col);
    rest = &rest[col_end..];
    while !rest.is_empty() {
        let (as_text, after) = if let Some(r) = rest.strip_prefix("->>") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("->") {
            (false, r)
        } else {
            return Err(RestError::parse(format!("\"failed to parse field ({s})\""), "unexpected characters after a column name"));
        };
        let end = after.find("->").unwrap_or(after.len());
        let raw_key = after[..end].trim();
        if !is_json_operand(raw_key) {
            return Err(RestError::parse(format!("\"failed to parse field ({s})\""), "a JSON path step is ->key, ->\"quoted key\" or ->index"));
        }
        let key = unquote(raw_key);
        if key.is_empty() {
            return Err(RestError::parse(format!("\"failed to parse field ({s})\""), "empty JSON key"));
        }
        if parts.len() == MAX_JSON_PATH {
            return Err(RestError::parse(format!("\"failed to parse field ({s})\""), format!("a JSON path has at most {MAX_JSON_PATH} steps")));
        }
        parts.push(JsonStep { as_text, key });
        rest = &after[end..];
    }
    if column.is_empty() {
        return Err(RestError::parse(format!("\"failed to parse field ({s})\""), "empty column name"));
    }
    Ok(Field { column, path: parts })
}

fn parse_select(v: &str, depth: usize) -> Result<Vec<SelectItem>, RestError> {
    if depth > MAX_DEPTH {
        return Err(too_deep("select"));
    }
    let mut items = Vec::new();
    for raw in split_top(v, ',') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if raw == "*" {
            items.push(SelectItem::Star);
            continue;
        }
        if raw.ends_with(')') && raw.contains('(') {
            items.push(SelectItem::Embed(parse_embed(raw, depth)?));
            continue;
        }
        let (alias, rest) = match split_alias(raw) {
            Some((a, r)) => (Some(parse_alias(raw, a)?), r),
            None => (None, raw),
        };
        let (field_part, cast) = match rest.rsplit_once("::") {
            Some((f, c)) => (f, Some(parse_cast(raw, c)?)),
            None => (rest, None),
        };
        items.push(SelectItem::Field { field: parse_field(field_part)?, alias, cast });
    }
    Ok(items)
}

/// `alias:name!hint!inner(items)`.
fn parse_embed(raw: &str, depth: usize) -> Result<Embed, RestError> {
    let open = raw.find('(').unwrap_or(raw.len());
    let head = &raw[..open];
    let inner = &raw[open + 1..raw.len() - 1];
    let (alias, head) = match split_alias(head) {
        Some((a, r)) => (Some(parse_alias(raw, a)?), r.trim()),
        None => (None, head.trim()),
    };
    let mut parts = head.split('!');
    let name = unquote(parts.next().unwrap_or("").trim());
    if name.is_empty() || name.starts_with("...") {
        return Err(RestError::parse(format!("\"failed to parse select ({raw})\""), "embeds look like alias:table!hint(col1,col2)"));
    }
    let (mut hint, mut inner_join) = (None, false);
    for h in parts {
        match h.trim() {
            "inner" => inner_join = true,
            "left" => inner_join = false,
            other if !other.is_empty() => hint = Some(unquote(other)),
            _ => {}
        }
    }
    Ok(Embed { name, alias, hint, inner: inner_join, select: parse_select(inner, depth + 1)? })
}

/// The type after `::` in `select=`: PostgREST's grammar (letters, digits, `_`, `$`
/// and spaces), plus an optional `[]`. The name is resolved against the catalog by the
/// planner; it never reaches SQL as written.
fn parse_cast(raw: &str, c: &str) -> Result<String, RestError> {
    let t = c.trim();
    let base = t.strip_suffix("[]").unwrap_or(t).trim_end();
    let ok = !base.is_empty() && base.len() <= 64 && base.chars().all(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '$' | ' '));
    if !ok {
        return Err(RestError::parse(format!("\"failed to parse select ({raw})\""), "a cast names a type: col::text"));
    }
    Ok(t.to_owned())
}

/// `alias:` of a select item or embed: a field name, or a quoted name without
/// control characters.
fn parse_alias(raw: &str, a: &str) -> Result<String, RestError> {
    let a = a.trim();
    let quoted = a.len() >= 2 && a.starts_with('"') && a.ends_with('"');
    if (quoted && !a.chars().any(char::is_control)) || is_field_name(a) {
        return Ok(unquote(a));
    }
    Err(RestError::parse(format!("\"failed to parse select ({raw})\""), "an alias is a name: alias:column"))
}

/// PostgREST's unquoted field name: identifiers (letters, digits, `_`, `$`, spaces)
/// joined by single dashes.
fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.split('-').all(|part| !part.trim().is_empty() && part.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | ' ')))
}

/// A JSON path operand: a quoted key, an array index (`-?digits`) or a field name.
fn is_json_operand(s: &str) -> bool {
    if s.chars().any(char::is_control) {
        return false;
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return true;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())) || is_field_name(s)
}

/// `alias:rest`, ignoring the `::` of casts.
fn split_alias(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b':' {
            let next_colon = b.get(i + 1) == Some(&b':');
            let prev_colon = i > 0 && b[i - 1] == b':';
            if !next_colon && !prev_colon {
                return Some((&s[..i], &s[i + 1..]));
            }
        }
    }
    None
}

fn parse_order(v: &str) -> Result<Vec<OrderTerm>, RestError> {
    let mut out = Vec::new();
    for raw in split_top(v, ',') {
        let term = raw.trim();
        if term.is_empty() {
            continue;
        }
        let mut pieces: Vec<&str> = term.split('.').collect();
        let mut desc = false;
        let mut nulls_first = None;
        while let Some(last) = pieces.last().copied() {
            match last {
                "asc" => desc = false,
                "desc" => desc = true,
                "nullsfirst" => nulls_first = Some(true),
                "nullslast" => nulls_first = Some(false),
                _ => break,
            }
            pieces.pop();
            if pieces.len() <= 1 {
                break;
            }
        }
        if pieces.len() > 1 && !term.contains(['(', '"']) && !term.contains("->") {
            let at = v.find(raw).unwrap_or(0) + raw.len() - raw.trim_start().len();
            return Err(order_syntax_error(v, at, term));
        }
        let target = pieces.join(".");
        // `relation(column)`: a related order, by a column of a to-one embed.
        let (relation, field) = match target.split_once('(') {
            Some((rel, rest)) if !rel.starts_with('"') && rest.ends_with(')') && !rel.contains("->") => (Some(rel.trim().to_owned()), parse_field(&rest[..rest.len() - 1])?),
            _ => (None, parse_field(&target)?),
        };
        out.push(OrderTerm { relation, field, desc, nulls_first });
    }
    Ok(out)
}

/// PostgREST's parse error for a bad `order` term, pointing at the first character
/// its grammar (`field[.asc|.desc][.nullsfirst|.nullslast]`) cannot take.
fn order_syntax_error(v: &str, term_at: usize, term: &str) -> RestError {
    let mut segs = term.split('.');
    let mut pos = segs.next().map_or(0, str::len);
    let mut bad = '.';
    for s in segs {
        if ["asc", "desc", "nullsfirst", "nullslast"].contains(&s) {
            pos += 1 + s.len();
            continue;
        }
        let kw = ["nullsfirst", "nullslast", "desc", "asc"].into_iter().find(|k| s.starts_with(k));
        pos += 1 + kw.map_or(0, str::len);
        bad = s[kw.map_or(0, str::len)..].chars().next().unwrap_or('.');
        break;
    }
    RestError::new(
        StatusCode::BAD_REQUEST,
        "PGRST100",
        format!("\"failed to parse order ({v})\" (line 1, column {})", term_at + pos + 1),
        Some(format!("unexpected '{bad}' expecting \",\" or end of input")),
        None,
    )
}

/// `key=value` of the query string as a filter.
pub fn parse_filter(key: &str, value: &str) -> Result<Filter, RestError> {
    let field = parse_field(key)?;
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (op_part, val) =
        rest.split_once('.').ok_or_else(|| RestError::parse(format!("\"failed to parse filter ({value})\""), "filters look like column=op.value, e.g. id=eq.1"))?;
    let (op_name, modifier) = match op_part.split_once('(') {
        Some((o, m)) => (o, m.strip_suffix(')')),
        None => (op_part, None),
    };
    let op = Op::parse(op_name).ok_or_else(|| RestError::parse(format!("\"failed to parse filter ({value})\""), format!("unknown operator {op_name:?}")))?;
    let (mut quantifier, mut language) = (None, None);
    if let Some(m) = modifier {
        match (m, op) {
            ("any", o) if o.quantifiable() => quantifier = Some(Quantifier::Any),
            ("all", o) if o.quantifiable() => quantifier = Some(Quantifier::All),
            (lang, Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts) if !lang.is_empty() => language = Some(lang.to_owned()),
            _ => return Err(RestError::parse(format!("\"failed to parse filter ({value})\""), format!("bad modifier {m:?}"))),
        }
    }
    Ok(Filter { field, negate, op, quantifier, language, value: val.to_owned() })
}

fn parse_tree_items(inner: &str, depth: usize) -> Result<Vec<Condition>, RestError> {
    if depth > MAX_DEPTH {
        return Err(too_deep("logic tree"));
    }
    let mut out = Vec::new();
    for item in split_top(inner, ',') {
        let item = item.trim();
        let (negate, body) = match item.strip_prefix("not.") {
            Some(b) if b.starts_with("and(") || b.starts_with("or(") => (true, b),
            _ => (false, item),
        };
        if let Some(rest) = body.strip_prefix("and(").or_else(|| body.strip_prefix("or(")) {
            let inner = rest.strip_suffix(')').ok_or_else(|| RestError::parse(format!("\"failed to parse logic tree ({item})\""), "unbalanced parentheses"))?;
            out.push(Condition::Tree { or: body.starts_with("or("), negate, children: parse_tree_items(inner, depth + 1)? });
            continue;
        }
        // col.op.value, col.not.op.value, col->a.op.value
        let (col, rest) = split_field_and_filter(item).ok_or_else(|| RestError::parse(format!("\"failed to parse logic tree ({item})\""), "expected column.operator.value"))?;
        out.push(Condition::Filter(parse_filter(col, rest)?));
    }
    Ok(out)
}

/// Splits `a->b.not.eq.1` into (`a->b`, `not.eq.1`): the column ends at the first
/// `.` that is followed by `not.` or an operator name.
fn split_field_and_filter(s: &str) -> Option<(&str, &str)> {
    let mut search = 0;
    while let Some(i) = s[search..].find('.') {
        let i = search + i;
        let after = &s[i + 1..];
        let op = after.strip_prefix("not.").unwrap_or(after);
        let name = op.split(['.', '(']).next().unwrap_or("");
        if Op::parse(name).is_some() {
            return Some((&s[..i], after));
        }
        search = i + 1;
    }
    None
}

/// Parses `(a,b,"c,d")` of `in.` into values.
pub fn parse_list(v: &str) -> Result<Vec<String>, RestError> {
    let inner =
        v.strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(|| RestError::parse(format!("\"failed to parse filter (in.{v})\""), "in takes a list: in.(a,b)"))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(split_top(inner, ',').into_iter().map(|s| unquote(s.trim())).collect())
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
        assert!(parse_filter("x", "eq").is_err());
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
