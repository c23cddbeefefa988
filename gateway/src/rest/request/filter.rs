//! Filters (`col=[not.]op[(any|all)].value`), logic trees and lists.

use super::*;

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
        Some((o, m)) => {
            // `op(modifier)`: the modifier is an identifier (as PostgREST's grammar).
            let m = m.strip_suffix(')').filter(|m| m.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '$')));
            let m = m.ok_or_else(|| RestError::parse(format!("\"failed to parse filter ({value})\""), "an operator modifier is op(any), op(all) or fts(language)"))?;
            (o, Some(m))
        }
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

pub(super) fn parse_tree_items(inner: &str, depth: usize) -> Result<Vec<Condition>, RestError> {
    if depth > MAX_DEPTH {
        return Err(too_deep("logic tree"));
    }
    let mut out = Vec::new();
    for item in split_top(inner, ',') {
        let item = item.trim();
        // `and(...)`, `not.or(...)`; whitespace is allowed around the parentheses.
        let (negate, body) = match item.strip_prefix("not.") {
            Some(b) if logic_group(b).is_some() => (true, b),
            _ => (false, item),
        };
        if let Some((or, rest)) = logic_group(body) {
            let inner = rest.trim_end().strip_suffix(')').ok_or_else(|| RestError::parse(format!("\"failed to parse logic tree ({item})\""), "unbalanced parentheses"))?;
            out.push(Condition::Tree { or, negate, children: parse_tree_items(inner, depth + 1)? });
            continue;
        }
        // col.op.value, col.not.op.value, col->a.op.value
        let (col, rest) = split_field_and_filter(item).ok_or_else(|| RestError::parse(format!("\"failed to parse logic tree ({item})\""), "expected column.operator.value"))?;
        let mut f = parse_filter(col.trim(), rest.trim())?;
        // Inside a tree a value may be quoted to hold `,` or `)` (PostgREST's
        // pLogicSingleVal); the quotes are not part of it. Lists unquote their items.
        if f.op != Op::In && f.value.len() >= 2 && f.value.starts_with('"') && f.value.ends_with('"') {
            f.value = unquote(&f.value);
        }
        out.push(Condition::Filter(f));
    }
    Ok(out)
}

/// `and(` / `or(` (spaces allowed before the parenthesis) → (is or, what follows `(`).
fn logic_group(s: &str) -> Option<(bool, &str)> {
    let (or, rest) = if let Some(r) = s.strip_prefix("and") { (false, r) } else { (true, s.strip_prefix("or")?) };
    rest.trim_start().strip_prefix('(').map(|r| (or, r))
}

/// Splits `a->b.not.eq.1` into (`a->b`, `not.eq.1`): the column ends at the first
/// `.` that is followed by `not.` or an operator name.
pub(super) fn split_field_and_filter(s: &str) -> Option<(&str, &str)> {
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
