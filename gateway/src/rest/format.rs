//! `text/csv` request bodies, parsed here into the JSON rows the planner takes.
//! (CSV and stripped-null *responses* are rendered by the statement itself:
//! `plan::render`.)

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::RestError;
use crate::error::code::pgrst;

/// Most columns of a CSV body (Postgres's own limit per table).
pub const MAX_CSV_COLUMNS: usize = 1600;
/// Most fields (rows × columns) of a CSV body.
pub const MAX_CSV_CELLS: usize = 250_000;

/// A `text/csv` request body → a JSON array of objects keyed by the header line;
/// the field `NULL` is SQL NULL (as in PostgREST). Rows of another width than the
/// header → PGRST102.
pub fn parse_csv(body: &[u8]) -> Result<Value, RestError> {
    let text = std::str::from_utf8(body).map_err(|_| RestError::of(pgrst::INVALID_BODY, "CSV body is not UTF-8"))?;
    let mut records = split_records(text);
    if records.last().is_some_and(|r| r.len() == 1 && r[0].is_empty()) {
        records.pop();
    }
    let mut it = records.into_iter();
    let Some(header) = it.next() else { return Ok(Value::Array(Vec::new())) };
    // Each field becomes a map entry with its own copy of the key: bound the cells so
    // a small CSV of empty fields cannot become a large tree.
    if header.len() > MAX_CSV_COLUMNS || header.len().saturating_mul(it.len()) > MAX_CSV_CELLS {
        return Err(RestError::new(pgrst::INVALID_BODY, format!("A CSV body may hold at most {MAX_CSV_COLUMNS} columns and {MAX_CSV_CELLS} fields"), None, None)
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let mut rows = Vec::new();
    for rec in it {
        if rec.len() != header.len() {
            return Err(RestError::new(pgrst::INVALID_BODY, "All lines must have same number of fields", None, None));
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
