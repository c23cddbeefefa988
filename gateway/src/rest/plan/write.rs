//! Plans for writes: INSERT (with ON CONFLICT for upserts), PUT, UPDATE, DELETE, each
//! wrapped so that it answers the same 4-column row shape as reads when the client
//! asks for a representation.

use super::{order_sql, select_sql, where_sql, Source, R};
use crate::db::schema_cache::{SchemaCache, Table};
use crate::db::sql::{ident, push_ident, qualified, Sql};
use crate::error::code::pgrst;
use crate::rest::error::RestError;
use crate::rest::prefer::Accept;
use crate::rest::request::rows::Rows;
use crate::rest::request::{Condition, Op, QueryParams};

/// The payload of a write: its rows and the columns they set.
pub struct Payload<'a> {
    /// The rows (a JSON array of objects, as text).
    pub rows: &'a Rows,
    /// Columns written (from `columns=` or the rows' keys).
    pub columns: Vec<String>,
}

impl<'a> Payload<'a> {
    /// Checks the rows' keys and collects the columns.
    pub fn new(rows: &'a Rows, columns: Option<&[String]>) -> Result<Payload<'a>, RestError> {
        let columns = match columns {
            Some(c) => c.to_vec(),
            // As PostgREST: without `columns=`, every object has the first one's
            // keys (PGRST102 "All object keys must match" otherwise).
            None if rows.wide => {
                return Err(RestError::of(pgrst::INVALID_BODY, format!("an object may have at most {} keys without columns=", super::super::request::rows::MAX_KEYS)))
            }
            None if !rows.uniform => return Err(RestError::of(pgrst::INVALID_BODY, "All object keys must match")),
            None => rows.first_keys.clone().unwrap_or_default(),
        };
        Ok(Payload { rows, columns })
    }

    /// The record definition the body's rows are read with: each column as its
    /// type, or as json when its domain has a json parser (a data representation,
    /// applied by [`read_value`]).
    fn record_def(&self, table: &Table, cache: &SchemaCache) -> Result<String, RestError> {
        let mut defs = Vec::new();
        for c in &self.columns {
            let col =
                table.column(c).ok_or_else(|| RestError::new(pgrst::NO_COLUMN, format!("Could not find the '{c}' column of '{}' in the schema cache", table.name), None, None))?;
            let ty = if json_parser(cache, &col.type_name).is_some() { "json" } else { col.type_name.as_str() };
            defs.push(format!("{} {ty}", ident(c)));
        }
        Ok(defs.join(", "))
    }
}

/// The json → domain function of a type (PostgREST's data representations).
fn json_parser<'c>(cache: &'c SchemaCache, type_name: &str) -> Option<&'c str> {
    cache.rep(type_name).and_then(|r| r.from_json.as_deref())
}

/// Column `c` of a body row `_x`, read through its domain's json parser if any.
fn read_value(cache: &SchemaCache, table: &Table, c: &str) -> String {
    match table.column(c).and_then(|col| json_parser(cache, &col.type_name)) {
        Some(func) => format!("{func}(_x.{})", ident(c)),
        None => format!("_x.{}", ident(c)),
    }
}

/// Upsert behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Plain insert.
    Error,
    /// `resolution=merge-duplicates`.
    Merge,
    /// `resolution=ignore-duplicates`.
    Ignore,
}

/// POST: insert (or upsert). `returning`: the representation's form, if any.
/// `missing_default`: keys absent from some objects take the column default
/// (`Prefer: missing=default`) instead of NULL.
pub fn insert(cache: &SchemaCache, table: &Table, q: &QueryParams, p: &Payload, conflict: OnConflict, returning: Option<Accept>, missing_default: bool) -> Result<Sql, RestError> {
    let mut sql = Sql::default();
    let mut stmt = insert_stmt(&mut sql, cache, table, p, missing_default, "")?;
    if conflict != OnConflict::Error {
        let keys = match &q.on_conflict {
            Some(k) => k.clone(),
            None => table.primary_key.clone(),
        };
        if keys.is_empty() {
            return Err(RestError::of(pgrst::QUERY_PARSE, "on_conflict is required for a table without primary key"));
        }
        for k in &keys {
            table.column(k).ok_or_else(|| RestError::no_column(&table.name, k))?;
        }
        let keys_sql: Vec<String> = keys.iter().map(|k| ident(k)).collect();
        // As PostgREST: every given column is set, the conflict keys included (a
        // body of keys only then returns each row it met).
        let updates: Vec<String> = p.columns.iter().map(|c| format!("{0} = EXCLUDED.{0}", ident(c))).collect();
        if conflict == OnConflict::Ignore || updates.is_empty() {
            stmt.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys_sql.join(", ")));
        } else {
            stmt.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys_sql.join(", "), updates.join(", ")));
        }
    }
    finish_write(sql, cache, table, q, stmt, returning, false)
}

/// PUT: creates or replaces the one row its primary-key filters name (PostgREST's
/// single-row upsert); with a representation, the 4th result column says whether it
/// was created (1) or replaced (0).
pub fn put(cache: &SchemaCache, table: &Table, q: &QueryParams, p: &Payload, returning: Option<Accept>) -> Result<Sql, RestError> {
    if q.limit.is_some() || q.offset.is_some() {
        return Err(RestError::of(pgrst::PUT_LIMIT, "limit/offset querystring parameters are not allowed for PUT"));
    }
    let not_pk = || RestError::new(pgrst::INVALID_PUT, "Filters must include all and only primary key columns with 'eq' operators", None, None);
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for c in &q.conditions {
        match c {
            Condition::Filter(f) if !f.negate && f.op == Op::Eq && f.quantifier.is_none() && f.field.path.is_empty() && table.primary_key.contains(&f.field.column) => {
                if keys.iter().any(|(k, _)| *k == f.field.column) {
                    return Err(not_pk());
                }
                keys.push((&f.field.column, &f.value));
            }
            _ => return Err(not_pk()),
        }
    }
    if table.primary_key.is_empty() || keys.len() != table.primary_key.len() {
        return Err(not_pk());
    }
    if p.rows.len == 0 {
        return Err(RestError::of(pgrst::INVALID_BODY, "PUT takes one row"));
    }
    // PostgREST's PUT: the body's rows whose keys equal the URL's are written (the
    // first of an array, typically); the transaction fails with PGRST115 unless
    // exactly one was (RequestInfo::put_one). Compared by Postgres as the column's
    // type, so `id=eq.01` matches `"id": 1`.
    let mismatch = || RestError::of(pgrst::PUT_KEY_MISMATCH, "Payload values do not match URL in primary key column(s)");
    let mut sql = Sql::default();
    let mut matching = Vec::new();
    for (k, v) in &keys {
        if !p.columns.iter().any(|c| c == k) {
            return Err(mismatch());
        }
        let col = table.column(k).ok_or_else(|| RestError::no_column(&table.name, k))?;
        let bound = sql.bind((*v).to_owned());
        // The URL's value read as a filter's is (a domain's text parser, if any).
        let url_value = match cache.rep(&col.type_name).and_then(|r| r.from_text.as_deref()) {
            Some(func) => format!("{func}({bound})"),
            None => format!("{bound}::{}", col.type_name),
        };
        matching.push(format!("{} = {url_value}", read_value(cache, table, k)));
    }
    let mut stmt = insert_stmt(&mut sql, cache, table, p, false, &matching.join(" AND "))?;
    let pk_sql: Vec<String> = table.primary_key.iter().map(|k| ident(k)).collect();
    let sets: Vec<String> = p.columns.iter().map(|c| format!("{0} = EXCLUDED.{0}", ident(c))).collect();
    stmt.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", pk_sql.join(", "), sets.join(", ")));
    finish_write(sql, cache, table, q, stmt, returning, true)
}

/// The alias of an INSERT's target (its whole-row value and xmax are returned).
const INS: &str = "_pgs_i";

/// `INSERT INTO table (cols) SELECT ... FROM the JSON rows` (or DEFAULT VALUES).
/// `only`: a condition on the body's rows (`_x`), or empty for all of them.
fn insert_stmt(sql: &mut Sql, cache: &SchemaCache, table: &Table, p: &Payload, missing_default: bool, only: &str) -> Result<String, RestError> {
    if !p.columns.is_empty() && only.is_empty() {
        if let Some(values) = plain_values(cache, table, p) {
            // One object of plain values: a VALUES row of parameters, each read by its
            // column type's input function as the record conversion would (Postgres
            // then parses no JSON document for a single-row insert). Written into one
            // buffer: this is the most common write.
            let mut stmt = String::with_capacity(64 + table.schema.len() + table.name.len() + 48 * values.len());
            stmt.push_str("INSERT INTO ");
            push_ident(&mut stmt, &table.schema);
            stmt.push('.');
            push_ident(&mut stmt, &table.name);
            stmt.push_str(" AS ");
            stmt.push_str(INS);
            stmt.push_str(" (");
            for (i, c) in p.columns.iter().enumerate() {
                if i > 0 {
                    stmt.push_str(", ");
                }
                push_ident(&mut stmt, c);
            }
            stmt.push_str(") VALUES (");
            for (i, v) in values.into_iter().enumerate() {
                if i > 0 {
                    stmt.push_str(", ");
                }
                match v {
                    Plain::Value(cast, text) => {
                        sql.push_param(&mut stmt, text);
                        stmt.push_str("::");
                        stmt.push_str(cast);
                    }
                    Plain::Missing(Some(d)) if missing_default => stmt.push_str(d),
                    Plain::Missing(_) => stmt.push_str("NULL"),
                }
            }
            stmt.push(')');
            return Ok(stmt);
        }
    }
    let target = format!("{} AS {INS}", qualified(&table.schema, &table.name));
    let cols: Vec<String> = p.columns.iter().map(|c| ident(c)).collect();
    let stmt = if cols.is_empty() {
        // `{}` or `[{}, {}]`: a row of defaults per object (an empty select list
        // inserts every column's default, as PostgREST's statement does).
        let rows = sql.bind(p.rows.json.clone());
        format!("INSERT INTO {target} SELECT FROM jsonb_array_elements({rows}::jsonb)")
    } else {
        let def = p.record_def(table, cache)?;
        let rows = sql.bind(p.rows.json.clone());
        let mut values = Vec::new();
        for c in &p.columns {
            let col = table.column(c).ok_or_else(|| RestError::no_column(&table.name, c))?;
            match (&col.default_sql, missing_default) {
                (Some(d), true) => {
                    let key = sql.bind(c.clone());
                    values.push(format!("CASE WHEN _j.r ? {key} THEN {} ELSE {d} END", read_value(cache, table, c)));
                }
                _ => values.push(read_value(cache, table, c)),
            }
        }
        let only = if only.is_empty() { String::new() } else { format!(" WHERE {only}") };
        if p.rows.len == 1 {
            // One row: no set of elements to number and sort (a lighter plan for the
            // most common write).
            format!(
                "INSERT INTO {target} ({}) SELECT {} FROM (SELECT {rows}::jsonb -> 0 AS r) AS _j CROSS JOIN LATERAL jsonb_to_record(_j.r) AS _x({def}){only}",
                cols.join(", "),
                values.join(", ")
            )
        } else {
            format!(
                "INSERT INTO {target} ({}) SELECT {} FROM jsonb_array_elements({rows}::jsonb) WITH ORDINALITY AS _j(r, n) \
                 CROSS JOIN LATERAL jsonb_to_record(_j.r) AS _x({def}){only} ORDER BY _j.n",
                cols.join(", "),
                values.join(", ")
            )
        }
    };
    Ok(stmt)
}

/// The longest number passed on as written (any shorter one is a valid numeric).
const MAX_PLAIN_NUMBER: usize = 1000;

/// A value of a single-object insert's `VALUES` row.
enum Plain<'t> {
    /// The column's type (without modifier) and the value's text (None: NULL).
    Value(&'t str, Option<String>),
    /// The object lacks the key (a `columns=` column): NULL, or with
    /// `missing=default` the column's default (its SQL, from the catalog).
    Missing(Option<&'t str>),
}

/// The one object of `p` as the texts its columns' input functions read, when
/// Postgres's record conversion (`jsonb_to_record`) would read exactly those: every
/// column a base or enum type (no domain, array, composite or json), each value null,
/// a string (unescaped, without NUL), a boolean, a number as written (no exponent,
/// not negative zero: `numeric_out` prints those differently) or, for jsonb, any JSON.
/// None: the body goes to Postgres as JSON. (Two bad values: the error names the
/// first in the table's column order — as PostgREST's `json_populate_recordset`
/// over the table's row type — not the first key.)
fn plain_values<'t>(cache: &SchemaCache, table: &'t Table, p: &Payload) -> Option<Vec<Plain<'t>>> {
    use serde_json::value::RawValue;
    if p.rows.len != 1 || p.rows.json.len() > 64 * 1024 {
        return None;
    }
    // Keys borrowed from the body (one with an escape fails to borrow: the JSON path).
    let rows: Vec<std::collections::BTreeMap<&str, &RawValue>> = serde_json::from_str(&p.rows.json).ok()?;
    let row = rows.first()?;
    let mut out = Vec::with_capacity(p.columns.len());
    for c in &p.columns {
        let col = table.column(c)?;
        if json_parser(cache, &col.type_name).is_some() {
            return None;
        }
        let cast = col.scalar.as_deref()?;
        let Some(raw) = row.get(c.as_str()) else {
            out.push(Plain::Missing(col.default_sql.as_deref()));
            continue;
        };
        let raw = raw.get().trim();
        let jsonb = cast == "pg_catalog.jsonb";
        let text = match raw.as_bytes().first()? {
            b'n' => None,
            _ if jsonb => Some(raw.to_owned()),
            b'"' => Some(serde_json::from_str::<String>(raw).ok().filter(|s| !s.contains('\0'))?),
            b't' | b'f' => Some(raw.to_owned()),
            // Postgres's JSON parser reads every number as numeric (which refuses
            // more than 16383 digits after the point): only short ones are passed on.
            b'-' | b'0'..=b'9' if raw.len() <= MAX_PLAIN_NUMBER && !raw.contains(['e', 'E']) && !raw.starts_with("-0") => Some(raw.to_owned()),
            _ => return None,
        };
        out.push(Plain::Value(cast, text));
    }
    Some(out)
}

/// PATCH: update the rows matching the filters.
/// `missing_default`: a column named by `columns=` that the object lacks is set to
/// its default (`Prefer: missing=default`).
pub fn update(cache: &SchemaCache, table: &Table, q: &QueryParams, p: &Payload, returning: Option<Accept>, missing_default: bool) -> Result<Sql, RestError> {
    let mut sql = Sql::default();
    let src = Source::top(table, cache, q);
    if p.rows.len != 1 {
        return Err(RestError::of(pgrst::INVALID_BODY, "PATCH takes a single JSON object"));
    }
    let row = sql.bind(p.rows.json.clone());
    let def = p.record_def(table, cache)?;
    let wh = where_sql(&mut sql, &src, &q.conditions)?;
    let given = p.rows.first_keys.as_deref().unwrap_or_default();
    let sets: Vec<String> = p
        .columns
        .iter()
        .map(|c| if missing_default && !given.contains(c) { format!("{} = DEFAULT", ident(c)) } else { format!("{} = {}", ident(c), read_value(cache, table, c)) })
        .collect();
    if sets.is_empty() {
        return Err(RestError::of(pgrst::INVALID_BODY, "PATCH needs at least one column to change"));
    }
    let stmt = format!("UPDATE {} AS {R} SET {} FROM json_to_record(({row}::json)->0) AS _x({def}){wh}", qualified(&table.schema, &table.name), sets.join(", "));
    finish_write(sql, cache, table, q, stmt, returning, false)
}

/// DELETE the rows matching the filters.
pub fn delete(cache: &SchemaCache, table: &Table, q: &QueryParams, returning: Option<Accept>) -> Result<Sql, RestError> {
    let mut sql = Sql::default();
    let src = Source::top(table, cache, q);
    let wh = where_sql(&mut sql, &src, &q.conditions)?;
    let stmt = format!("DELETE FROM {} AS {R}{wh}", qualified(&table.schema, &table.name));
    finish_write(sql, cache, table, q, stmt, returning, false)
}

/// Without a representation the statement runs bare (no RETURNING, so RLS SELECT
/// policies do not apply to writes); with one, rows come back through the select list.
/// Wraps a write so that it answers the 4-column row shape: the rows (through the
/// request's select), their count, the single row, and — for inserts — how many rows
/// were newly inserted (not updated by ON CONFLICT), from `xmax = 0`.
/// `put`: the one row is checked after the statement (PostgREST's PUT fails with
/// PGRST115 before any singular check: [`crate::db::RequestInfo::put_one`]).
fn finish_write(mut sql: Sql, cache: &SchemaCache, table: &Table, q: &QueryParams, stmt: String, returning: Option<Accept>, put: bool) -> Result<Sql, RestError> {
    let Some(accept) = returning else {
        sql.push(&stmt);
        return Ok(sql);
    };
    let src = Source::top(table, cache, q);
    let mut inner = Vec::new();
    let select = select_sql(&mut sql, &src, &q.select, &mut inner)?;
    let wh = if inner.is_empty() { String::new() } else { format!(" WHERE {}", inner.join(" AND ")) };
    let ord = order_sql(&mut sql, &src, &q.order, &q.select)?;
    let (returning_list, from, inserted) = if stmt.starts_with("INSERT") {
        // Views have no system columns: their inserts all count as new.
        let ins = if table.is_view { "true".to_owned() } else { format!("({INS}.xmax = 0)") };
        (format!("{INS} AS _pgs_row, {ins} AS _pgs_ins"), format!("(SELECT (_m._pgs_row).* FROM _pgs_m _m) {R}"), "(SELECT count(*) FROM _pgs_m WHERE _pgs_ins)")
    } else {
        (format!("{R}.*"), format!("_pgs_m {R}"), "NULL::bigint")
    };
    let columns = super::render::columns(accept);
    // A single object: exactly one row, checked inside this statement (anything else
    // aborts it, and the write with it: 406 PGRST116) — one round trip, as any write.
    let one = if matches!(accept, Accept::Object | Accept::ObjectStripped) && !put { " HAVING pgr.expect_one(count(*))" } else { "" };
    sql.push(&format!("WITH _pgs_m AS ({stmt} RETURNING {returning_list}) SELECT {columns}, {inserted} FROM (SELECT {select} FROM {from}{wh}{ord}) _pgs_t{one}"));
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::{insert, OnConflict, Payload};
    use crate::db::schema_cache::{Column, SchemaCache, Table};
    use crate::rest::request::rows::Rows;
    use crate::rest::request::QueryParams;

    fn col(name: &str, type_name: &str, scalar: Option<&str>) -> Column {
        Column { name: name.into(), type_name: type_name.into(), scalar: scalar.map(Into::into), nullable: true, has_default: false, generated: false, default_sql: None }
    }

    fn statement(body: &str) -> (String, Vec<Option<String>>) {
        let table = Table {
            schema: "public".into(),
            name: "t".into(),
            is_view: false,
            quiet: true,
            columns: vec![col("a", "character varying(3)", Some("pg_catalog.\"varchar\"")), col("j", "jsonb", Some("pg_catalog.jsonb")), col("arr", "integer[]", None)],
            primary_key: Vec::new(),
            writable: 28,
        };
        let rows = Rows::from_json(body.as_bytes()).unwrap();
        let p = Payload::new(&rows, None).unwrap();
        let sql = insert(&SchemaCache::default(), &table, &QueryParams::default(), &p, OnConflict::Error, None, false).unwrap();
        (sql.text, sql.params)
    }

    #[test]
    fn one_object_of_plain_values_is_a_values_row_of_parameters() {
        let (text, params) = statement(r#"{"a": "x\ty", "j": {"k": [1, 2]}}"#);
        assert_eq!(text, r#"INSERT INTO "public"."t" AS _pgs_i ("a", "j") VALUES ($1::text::pg_catalog."varchar", $2::text::pg_catalog.jsonb)"#);
        assert_eq!(params, vec![Some("x\ty".to_owned()), Some(r#"{"k": [1, 2]}"#.to_owned())]);
        let (_, params) = statement(r#"{"a": null, "j": null}"#);
        assert_eq!(params, vec![None, None]);
        // A key written with an escape is still the column: read by Postgres from the
        // JSON (the VALUES row takes keys as they are written).
        let (text, params) = statement(r#"{"\u0061": "x"}"#);
        assert!(text.starts_with(r#"INSERT INTO "public"."t" AS _pgs_i ("a") SELECT _x."a" FROM"#), "{text}");
        assert_eq!(params, vec![Some(r#"[{"\u0061": "x"}]"#.to_owned())]);
    }

    #[test]
    fn what_only_the_record_conversion_reads_goes_as_json() {
        for body in [r#"{"arr": [1]}"#, r#"{"a": 1e2}"#, r#"{"a": -0}"#, r#"{"a": {"b": 1}}"#, r#"{"a": "x\u0000"}"#, r#"[{"a": "x"}, {"a": "y"}]"#] {
            let (text, _) = statement(body);
            assert!(text.contains("jsonb_to_record") && !text.contains("VALUES"), "{body}: {text}");
        }
    }
}
