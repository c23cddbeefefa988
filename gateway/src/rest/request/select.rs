//! `select=` (fields, JSON paths, casts, aliases, embeds) and `order=`.

use super::*;

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

/// PostgREST's aggregate select items: `[alias:]count()[::cast]` and
/// `[alias:]field[::cast].(sum|avg|count|max|min)()[::cast]`.
fn is_aggregate(raw: &str) -> bool {
    let rest = match split_alias(raw) {
        Some((_, r)) => r,
        None => raw,
    };
    // An optional trailing cast of the aggregate's result.
    let ident = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || c == '_');
    let body = match rest.rsplit_once("::") {
        Some((b, c)) if ident(c) && b.ends_with("()") => b,
        _ => rest,
    };
    let Some(call) = body.strip_suffix("()") else { return false };
    if call == "count" {
        return true;
    }
    matches!(call.rsplit_once('.'), Some((field, f)) if !field.is_empty() && matches!(f, "sum" | "avg" | "count" | "max" | "min"))
}

pub(super) fn parse_select(v: &str, depth: usize) -> Result<Vec<SelectItem>, RestError> {
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
        if is_aggregate(raw) {
            return Err(RestError::of(crate::error::code::pgrst::AGGREGATES_NOT_ALLOWED, "Use of aggregate functions is not allowed"));
        }
        if raw.ends_with(')') && raw.contains('(') {
            items.push(SelectItem::Embed(parse_embed(raw, depth)?));
            continue;
        }
        let (alias, rest) = match split_alias(raw) {
            Some((a, r)) => (Some(parse_alias(raw, a)?), r),
            None => (None, raw),
        };
        let (field_part, cast) = match rsplit_outside_quotes(rest, "::") {
            Some((f, c)) => (f, Some(parse_cast(raw, c)?)),
            None => (rest, None),
        };
        items.push(SelectItem::Field { field: parse_field(field_part)?, alias, cast });
    }
    Ok(items)
}

/// `alias:name!hint!inner(items)`.
pub(super) fn parse_embed(raw: &str, depth: usize) -> Result<Embed, RestError> {
    // Each level of embedding multiplies the rows the statement builds: a short cyclic
    // request (authors(books(authors(...)))) could otherwise spend the whole statement
    // timeout of a connection.
    if depth >= MAX_EMBED_DEPTH {
        return Err(RestError::parse(
            format!("\"failed to parse select\": embedding nested deeper than {MAX_EMBED_DEPTH} levels"),
            format!("resources may be embedded at most {MAX_EMBED_DEPTH} levels deep"),
        ));
    }
    let open = raw.find('(').unwrap_or(raw.len());
    let head = &raw[..open];
    // `name::varchar(10)`: a cast takes no parentheses (PostgREST's grammar fails at
    // the `(`), it is not an embed named `name::varchar`.
    if rsplit_outside_quotes(head, "::").is_some() {
        return Err(RestError::parse(format!("\"failed to parse select ({raw})\""), "a cast names a type without a length or precision: col::varchar"));
    }
    let inner = &raw[open + 1..raw.len() - 1];
    let (spread, head) = match head.trim_start().strip_prefix("...") {
        Some(rest) => (true, rest),
        None => (false, head),
    };
    let (alias, head) = match split_alias(head) {
        Some((a, r)) => (Some(parse_alias(raw, a)?), r.trim()),
        None => (None, head.trim()),
    };
    let mut parts = head.split('!');
    let name = unquote(parts.next().unwrap_or("").trim());
    if name.is_empty() || name.starts_with("...") || (spread && alias.is_some()) {
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
    Ok(Embed { name, alias, hint, inner: inner_join, select: parse_select(inner, depth + 1)?, spread })
}

/// The type after `::` in `select=`: PostgREST's grammar (letters, digits, `_`, `$`
/// and spaces), plus an optional `[]`. The name is resolved against the catalog by the
/// planner; it never reaches SQL as written.
pub(super) fn parse_cast(raw: &str, c: &str) -> Result<String, RestError> {
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
pub(super) fn parse_alias(raw: &str, a: &str) -> Result<String, RestError> {
    let a = a.trim();
    let quoted = a.len() >= 2 && a.starts_with('"') && a.ends_with('"');
    if (quoted && !a.chars().any(char::is_control)) || is_field_name(a) {
        return Ok(unquote(a));
    }
    Err(RestError::parse(format!("\"failed to parse select ({raw})\""), "an alias is a name: alias:column"))
}

/// PostgREST's unquoted field name: identifiers (letters, digits, `_`, `$`, spaces)
/// joined by single dashes.
pub(super) fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.split('-').all(|part| !part.trim().is_empty() && part.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | ' ')))
}

/// A JSON path operand: a quoted key, an array index (`-?digits`) or a field name.
pub(super) fn is_json_operand(s: &str) -> bool {
    if s.chars().any(char::is_control) {
        return false;
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return true;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    // PostgREST's key: pieces of anything but `(-:.,>)` joined by single dashes
    // (keys are bind parameters, never SQL text).
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())) || is_field_name(s) || s.split('-').all(|p| !p.is_empty() && !p.contains(['(', ':', '.', ',', '>', ')']))
}

/// The last `sep` outside double quotes.
fn rsplit_outside_quotes<'s>(s: &'s str, sep: &str) -> Option<(&'s str, &'s str)> {
    let mut quoted = false;
    let mut last = None;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted && s[i..].starts_with(sep) {
            last = Some(i);
        }
    }
    last.map(|i| (&s[..i], &s[i + sep.len()..]))
}

/// `alias:rest`, ignoring the `::` of casts and anything inside double quotes.
pub(super) fn split_alias(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut quoted = false;
    for i in 0..b.len() {
        if b[i] == b'"' {
            quoted = !quoted;
        }
        if b[i] == b':' && !quoted {
            let next_colon = b.get(i + 1) == Some(&b':');
            let prev_colon = i > 0 && b[i - 1] == b':';
            if !next_colon && !prev_colon {
                return Some((&s[..i], &s[i + 1..]));
            }
        }
    }
    None
}

pub(super) fn parse_order(v: &str) -> Result<Vec<OrderTerm>, RestError> {
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
            // PostgREST's exact message comes from its grammar (super::grammar).
            return Err(RestError::parse(format!("\"failed to parse order ({v})\""), "order terms look like column.asc.nullslast"));
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
