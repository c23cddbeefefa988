//! Other representations than JSON: `text/csv` in and out, and
//! `nulls=stripped`. Output is converted by Postgres (one extra statement, only for
//! these media types); CSV bodies are parsed here into the JSON rows the planner
//! takes.

use axum::http::StatusCode;
use deadpool_postgres::Pool;

use crate::db::fair::FairPool;
use serde_json::{Map, Value};

use super::error::RestError;
use super::exec::Outcome;
use super::prefer::Accept;

/// JSON array → CSV: a header from the first row's keys (in order), then one line
/// per row; NULL is an empty field; fields with `"`, `,` or line breaks are quoted.
const TO_CSV: &str = r#"
WITH j AS (SELECT $1::text::json AS v)
SELECT coalesce(
    (SELECT string_agg(CASE WHEN k ~ '[",\r\n]' THEN '"' || replace(k, '"', '""') || '"' ELSE k END, ',' ORDER BY n)
       FROM j, json_object_keys(j.v -> 0) WITH ORDINALITY AS h(k, n))
    || coalesce(E'\n' || (
        SELECT string_agg(
                 (SELECT string_agg(CASE WHEN e.t IS NULL THEN ''
                                         WHEN e.t ~ '[",\r\n]' THEN '"' || replace(e.t, '"', '""') || '"'
                                         ELSE e.t END, ',' ORDER BY e.n)
                    FROM json_each_text(x.r) WITH ORDINALITY AS e(k, t, n)),
                 E'\n' ORDER BY x.rn)
          FROM j, json_array_elements(j.v) WITH ORDINALITY AS x(r, rn)), ''),
    '')"#;

/// Applies `accept` to the statement's JSON output in place.
pub async fn convert(pool: &FairPool<Pool>, out: &mut Outcome, accept: Accept) -> Result<(), RestError> {
    let db = |e| RestError::from_db(e, false);
    match accept {
        Accept::Csv => {
            let client = pool.get().await?;
            let body = out.body.clone().unwrap_or_else(|| "[]".into());
            let row = client.query_one(TO_CSV, &[&body]).await.map_err(db)?;
            out.body = row.get(0);
        }
        Accept::JsonStripped | Accept::ObjectStripped => {
            let client = pool.get().await?;
            let row = client.query_one("SELECT json_strip_nulls($1::text::json)::text, json_strip_nulls($2::text::json)::text", &[&out.body, &out.object]).await.map_err(db)?;
            (out.body, out.object) = (row.get(0), row.get(1));
        }
        Accept::Json | Accept::Object => {}
    }
    Ok(())
}

/// Most columns of a CSV body (Postgres's own limit per table).
pub const MAX_CSV_COLUMNS: usize = 1600;
/// Most fields (rows × columns) of a CSV body.
pub const MAX_CSV_CELLS: usize = 250_000;

/// A `text/csv` request body → a JSON array of objects keyed by the header line;
/// the field `NULL` is SQL NULL (as in PostgREST). Rows of another width than the
/// header → PGRST102.
pub fn parse_csv(body: &[u8]) -> Result<Value, RestError> {
    let text = std::str::from_utf8(body).map_err(|_| RestError::bad("PGRST102", "CSV body is not UTF-8"))?;
    let mut records = split_records(text);
    if records.last().is_some_and(|r| r.len() == 1 && r[0].is_empty()) {
        records.pop();
    }
    let mut it = records.into_iter();
    let Some(header) = it.next() else { return Ok(Value::Array(Vec::new())) };
    // Each field becomes a map entry with its own copy of the key: bound the cells so
    // a small CSV of empty fields cannot become a large tree.
    if header.len() > MAX_CSV_COLUMNS || header.len().saturating_mul(it.len()) > MAX_CSV_CELLS {
        return Err(RestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PGRST102",
            format!("A CSV body may hold at most {MAX_CSV_COLUMNS} columns and {MAX_CSV_CELLS} fields"),
            None,
            None,
        ));
    }
    let mut rows = Vec::new();
    for rec in it {
        if rec.len() != header.len() {
            return Err(RestError::new(StatusCode::BAD_REQUEST, "PGRST102", "All lines must have same number of fields", None, None));
        }
        let mut m = Map::new();
        for (k, v) in header.iter().zip(rec) {
            m.insert(k.clone(), if v == "NULL" { Value::Null } else { Value::String(v) });
        }
        rows.push(Value::Object(m));
    }
    Ok(Value::Array(rows))
}

/// RFC 4180 records: fields split on `,`, records on CRLF or LF, `"..."` quoting
/// with `""` for a quote.
fn split_records(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_bodies_become_rows() {
        assert_eq!(parse_csv(b"a,b\nbar,baz\n").unwrap(), json!([{"a": "bar", "b": "baz"}]));
        assert_eq!(parse_csv(b"a,b\r\nNULL,foo\r\n,x").unwrap(), json!([{"a": null, "b": "foo"}, {"a": "", "b": "x"}]));
        assert_eq!(parse_csv(b"a,b\n\"x, \"\"y\"\"\",\"line\nbreak\"").unwrap(), json!([{"a": "x, \"y\"", "b": "line\nbreak"}]));
        assert_eq!(parse_csv(b"a,b\n1,2,3").unwrap_err().code, "PGRST102");
        assert_eq!(parse_csv(b"").unwrap(), json!([]));
    }
}
