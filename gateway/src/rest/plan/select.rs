//! The select list: columns, casts, computed columns and embedded resources (JSON
//! objects and arrays, spreads, `!inner`, filters on embeds), each embed as a
//! correlated subquery over the relationship `rest::embed` resolves.

use super::{condition_sql, embed, field_expr, order_sql, Source, RED_ZONE, STACK_GROWTH};
use crate::db::schema_cache::Table;
use crate::db::sql::{ident, Sql};
use crate::error::code::pgrst;
use crate::rest::error::RestError;
use crate::rest::request::{Embed, Field, QueryParams, Scope, SelectItem};

/// The select list; `inner` collects conditions that `!inner` embeds add to the
/// WHERE clause of this level.
pub(super) fn select_sql(sql: &mut Sql, src: &Source, items: &[SelectItem], inner: &mut Vec<String>) -> Result<String, RestError> {
    if items.is_empty() {
        return Ok(join_items(vec![star(src)?].into_iter().flatten().collect()));
    }
    Ok(join_items(select_items(sql, src, items, inner)?))
}

fn join_items(items: Vec<(String, Option<String>)>) -> String {
    let out: Vec<String> = items
        .into_iter()
        .map(|(expr, name)| match name {
            Some(n) => format!("{expr} AS {}", ident(&n)),
            None => expr,
        })
        .collect();
    out.join(", ")
}

/// The select list as (expression, output name); `None` for a `*` (`alias.*`).
/// Embeds recurse through here (select_items → embed_sql → select_items), so the
/// per-item work lives in helpers and this frame stays small: MAX_DEPTH levels fit
/// the stack the fuzz harness gives (256 KiB).
fn select_items(sql: &mut Sql, src: &Source, items: &[SelectItem], inner: &mut Vec<String>) -> Result<Vec<(String, Option<String>)>, RestError> {
    let mut out = Vec::new();
    for it in items {
        match it {
            SelectItem::Star => out.extend(star(src)?),
            SelectItem::Field { field, alias, cast } => out.push(field_item(sql, src, field, alias.as_deref(), cast.as_deref())?),
            // An embed that outputs nothing (an empty select list, or only such
            // embeds) is only there to be filtered on: PostgREST leaves it out.
            SelectItem::Embed(e) if outputs_nothing(&e.select) => {
                if e.inner {
                    inner.push(embed_exists(sql, src, e)?);
                }
            }
            SelectItem::Embed(e) if e.spread => {
                if e.inner {
                    inner.push(embed_exists(sql, src, e)?);
                }
                out.extend(spread_items(sql, src, e)?);
            }
            SelectItem::Embed(e) => out.push(embed_item(sql, src, e, inner)?),
        }
    }
    Ok(out)
}

/// Whether a select list yields no column: empty, or only embeds that yield none.
/// (Embeds nest at most MAX_DEPTH levels: the recursion is bounded.)
fn outputs_nothing(items: &[SelectItem]) -> bool {
    items.iter().all(|it| matches!(it, SelectItem::Embed(e) if outputs_nothing(&e.select)))
}

/// `*`: `alias.*`, or column by column when a column has a data representation
/// (PostgREST), each formatted by it.
fn star(src: &Source) -> Result<Vec<(String, Option<String>)>, RestError> {
    let Some(table) = src.columns.filter(|_| src.has_formatted_columns()) else { return Ok(vec![(format!("{}.*", src.alias), None)]) };
    let mut out = Vec::with_capacity(table.columns.len());
    for c in &table.columns {
        let expr = format!("{}.{}", src.alias, ident(&c.name));
        out.push((formatted(src, expr, Some(&c.type_name)), Some(c.name.clone())));
    }
    Ok(out)
}

/// `expr` through its type's json formatter (a data representation), if it has one.
fn formatted(src: &Source, expr: String, ty: Option<&str>) -> String {
    match src.rep(ty).and_then(|r| r.to_json.as_deref()) {
        Some(func) => format!("{func}({expr})"),
        None => expr,
    }
}

/// One column, JSON path or computed column, cast and named.
#[inline(never)]
fn field_item(sql: &mut Sql, src: &Source, field: &Field, alias: Option<&str>, cast: Option<&str>) -> Result<(String, Option<String>), RestError> {
    let (expr, ty) = field_expr(sql, src, field)?;
    let expr = if field.path.is_empty() { formatted(src, expr, ty.as_deref()) } else { expr };
    let expr = match cast {
        Some(t) => {
            // The name resolves against the catalog; only its quoted, qualified
            // spelling is written.
            let resolved = src.ctx.and_then(|(cache, _)| cache.cast_type(t));
            match resolved {
                Some(ty) => format!("({expr})::{ty}"),
                None => return Err(RestError::of(pgrst::UNDEFINED_OBJECT, format!("type \"{t}\" does not exist"))),
            }
        }
        None => expr,
    };
    // The key of a JSON path names the value; an array index does not.
    let name =
        alias.map(str::to_owned).unwrap_or_else(|| field.path.iter().rev().map(|s| &s.key).find(|k| k.parse::<i64>().is_err()).cloned().unwrap_or_else(|| field.column.clone()));
    Ok((expr, Some(name)))
}

/// An embed as a JSON column; `!inner` adds its condition to `inner`.
#[inline(never)]
fn embed_item(sql: &mut Sql, src: &Source, e: &Embed, inner: &mut Vec<String>) -> Result<(String, Option<String>), RestError> {
    let (sub, is_object) = embed_sql(sql, src, e)?;
    if e.inner {
        inner.push(if is_object { format!("({sub}) IS NOT NULL") } else { format!("({sub})::jsonb <> '[]'::jsonb") });
    }
    Ok((format!("({sub})"), Some(e.key().to_owned())))
}

/// `...rel(cols)`: each selected column of the related resource becomes a column of
/// the parent's row — its value for a to-one relationship, the array of its values
/// for a to-many one (PostgREST's spread embeds).
fn spread_items(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<Vec<(String, Option<String>)>, RestError> {
    stacker::maybe_grow(RED_ZONE, STACK_GROWTH, || spread_items_here(sql, parent, e))
}

fn spread_items_here(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<Vec<(String, Option<String>)>, RestError> {
    let Child { src, table: child, rel, scope } = child(parent, e, "_pgs_s")?;
    let alias = src.alias.clone();
    let mut inner = Vec::new();
    let items = select_items(sql, &src, &e.select, &mut inner)?;
    let conds = child_conditions(sql, parent, &src, &rel, &scope, inner)?;
    let ord = order_sql(sql, &src, &scope.order, &e.select)?;
    let from = format!("FROM {} WHERE {}", embed::from_item(&rel, child, &parent.alias, &alias), conds.join(" AND "));
    let mut out = Vec::new();
    for (expr, name) in items {
        let columns = match name {
            Some(n) => vec![(expr, n)],
            None => child.columns.iter().map(|c| (format!("{alias}.{}", ident(&c.name)), c.name.clone())).collect(),
        };
        for (expr, name) in columns {
            let value = if rel.is_to_one() { format!("(SELECT {expr} {from}{ord} LIMIT 1)") } else { format!("(SELECT coalesce(json_agg({expr}{ord}), '[]')::jsonb {from})") };
            out.push((value, Some(name)));
        }
    }
    Ok(out)
}

/// The correlated subquery of one embed, and whether it yields an object (many-to-one)
/// rather than an array.
pub(super) fn embed_sql(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<(String, bool), RestError> {
    // Nesting is bounded (MAX_DEPTH) but frames differ by build and platform: the
    // stack grows on the heap when less than RED_ZONE is left, never overflows.
    stacker::maybe_grow(RED_ZONE, STACK_GROWTH, || embed_sql_here(sql, parent, e))
}

fn embed_sql_here(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<(String, bool), RestError> {
    let Child { src, table: child, rel, scope } = child(parent, e, "_pgs_e")?;
    let alias = src.alias.clone();
    let mut inner = Vec::new();
    let select = select_sql(sql, &src, &e.select, &mut inner)?;
    let conds = child_conditions(sql, parent, &src, &rel, &scope, inner)?;
    let ord = order_sql(sql, &src, &scope.order, &e.select)?;
    let mut paging = String::new();
    if let Some(l) = scope.limit {
        paging.push_str(&format!(" LIMIT {}::bigint", sql.bind(l.to_string())));
    }
    if let Some(o) = scope.offset {
        paging.push_str(&format!(" OFFSET {}::bigint", sql.bind(o.to_string())));
    }
    let from = embed::from_item(&rel, child, &parent.alias, &alias);
    let j = format!("_pgs_j{}", src.path.len());
    let body = format!("SELECT {select} FROM {from} WHERE {}{ord}{paging}", conds.join(" AND "));
    // Embedded values are jsonb, as PostgREST renders them (the same bytes: jsonb's
    // spacing and key order inside embeds).
    Ok(if rel.is_to_one() {
        // The embed's own limit/offset (if any) apply first; then its first row.
        (format!("SELECT row_to_json({j})::jsonb FROM ({body}) {j} LIMIT 1"), true)
    } else {
        (format!("SELECT coalesce(json_agg({j}), '[]')::jsonb FROM ({body}) {j}"), false)
    })
}

/// `EXISTS (...)`: the parent row has a related row of the embed that passes the
/// embed's own filters.
pub(super) fn embed_exists(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<String, RestError> {
    stacker::maybe_grow(RED_ZONE, STACK_GROWTH, || embed_exists_here(sql, parent, e))
}

fn embed_exists_here(sql: &mut Sql, parent: &Source, e: &Embed) -> Result<String, RestError> {
    let Child { src, table: child, rel, scope } = child(parent, e, "_pgs_x")?;
    // Its own `!inner` embeds must exist too (`a!inner(b!inner())&a.b.id=eq.3`).
    let mut nested = Vec::new();
    for it in &e.select {
        if let SelectItem::Embed(n) = it {
            if n.inner {
                nested.push(embed_exists(sql, &src, n)?);
            }
        }
    }
    let conds = child_conditions(sql, parent, &src, &rel, &scope, nested)?;
    Ok(format!("EXISTS (SELECT 1 FROM {} WHERE {})", embed::from_item(&rel, child, &parent.alias, &src.alias), conds.join(" AND ")))
}

/// An embedded resource, resolved: its source (aliased `prefix` + level), table,
/// relationship to the parent and its own parameters.
struct Child<'a> {
    src: Source<'a>,
    table: &'a Table,
    rel: embed::Rel<'a>,
    scope: Scope,
}

fn child<'a>(parent: &Source<'a>, e: &'a Embed, prefix: &str) -> Result<Child<'a>, RestError> {
    let not_here = || RestError::of(pgrst::QUERY_PARSE, "embedding is only possible on tables and views");
    let (cache, q) = parent.ctx.ok_or_else(not_here)?;
    let parent_table = parent.columns.ok_or_else(not_here)?;
    let (table, rel) = embed::resolve(cache, parent_table, e)?;
    let mut path = parent.path.clone();
    path.push(e.key().to_owned());
    let scope = q.embeds.get(&path).cloned().unwrap_or_default();
    let alias = format!("{prefix}{}", path.len());
    Ok(Child { src: Source { name: &table.name, columns: Some(table), alias, ctx: Some((cache, q)), path, items: &e.select }, table, rel, scope })
}

/// The join to the parent, the embed's own filters and its `!inner` conditions.
fn child_conditions(sql: &mut Sql, parent: &Source, src: &Source, rel: &embed::Rel, scope: &Scope, inner: Vec<String>) -> Result<Vec<String>, RestError> {
    let mut conds = vec![embed::join_condition(rel, &parent.alias, &src.alias)];
    for c in &scope.conditions {
        conds.push(condition_sql(sql, src, c)?);
    }
    conds.extend(inner);
    Ok(conds)
}

/// PGRST108 for parameters of an embedded resource (`children.id=eq.1`) that the
/// select list does not embed.
pub(super) fn check_embed_scopes(q: &QueryParams) -> Result<(), RestError> {
    for path in q.embeds.keys() {
        let mut items: &[SelectItem] = &q.select;
        for key in path {
            let found = items.iter().find_map(|it| match it {
                SelectItem::Embed(e) if e.key() == key => Some(e),
                _ => None,
            });
            match found {
                Some(e) => items = &e.select,
                None => {
                    return Err(RestError::new(
                        pgrst::NOT_EMBEDDED,
                        format!("'{key}' is not an embedded resource in this request"),
                        None,
                        Some(&format!("Verify that '{key}' is included in the 'select' query parameter.")),
                    ))
                }
            }
        }
    }
    Ok(())
}
