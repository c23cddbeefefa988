//! `text/csv` request bodies, parsed here into the JSON rows the planner takes.
//! (CSV and stripped-null *responses* are rendered by the statement itself:
//! `plan::render`.)

use axum::http::StatusCode;
use serde_json::Value;

use super::error::RestError;
use crate::error::code::pgrst;

/// Most columns of a CSV body (Postgres's own limit per table).
pub const MAX_CSV_COLUMNS: usize = 1600;
/// Most fields (rows × columns) of a CSV body.
pub const MAX_CSV_CELLS: usize = 250_000;

/// Most bytes the JSON rows of one CSV body may take (each row repeats the
/// header's keys, so a short CSV can grow far larger).
pub const MAX_CSV_JSON: usize = 64 * 1024 * 1024;

/// A `text/csv` request body → the text of a JSON array of objects keyed by the
/// header line; the field `NULL` is SQL NULL (as in PostgREST). Rows of another
/// width than the header → PGRST102. The text is measured before it is built and
/// held against the receive budget (`expansion`) while the request runs.
pub fn csv_rows(body: &[u8]) -> Result<(String, Option<tokio::sync::OwnedSemaphorePermit>), RestError> {
    let text = std::str::from_utf8(body).map_err(|_| RestError::of(pgrst::INVALID_BODY, "CSV body is not UTF-8"))?;
    let too_large = |what: String| RestError::new(pgrst::INVALID_BODY, what, None, None).with_status(StatusCode::PAYLOAD_TOO_LARGE);
    let limits = || too_large(format!("A CSV body may hold at most {MAX_CSV_COLUMNS} columns and {MAX_CSV_CELLS} fields"));
    let mut records = split_records(text).ok_or_else(limits)?;
    if records.last().is_some_and(|r| r.len() == 1 && r[0].is_empty()) {
        records.pop();
    }
    let mut it = records.into_iter();
    let Some(header) = it.next() else { return Ok(("[]".into(), None)) };
    if header.len() > MAX_CSV_COLUMNS || header.len().saturating_mul(it.len()) > MAX_CSV_CELLS {
        return Err(limits());
    }
    let keys: Vec<String> = header.iter().map(|k| Value::String(k.clone()).to_string()).collect();
    let rows: Vec<Vec<String>> = it.collect();
    let mut size = 2usize;
    for rec in &rows {
        if rec.len() != keys.len() {
            return Err(RestError::new(pgrst::INVALID_BODY, "All lines must have same number of fields", None, None));
        }
        // `{"k":v,...},`: exactly what is written below.
        size = size.saturating_add(2 + keys.iter().zip(rec).map(|(k, v)| k.len() + 2 + if v == "NULL" { 4 } else { json_string_len(v) }).sum::<usize>());
    }
    if size > MAX_CSV_JSON {
        return Err(too_large(format!("A CSV body may become at most {MAX_CSV_JSON} bytes of JSON rows")));
    }
    let held = crate::http::timeout::hold_expansion(size)
        .ok_or_else(|| RestError::new(pgrst::INVALID_BODY, "too many request bodies in flight; retry shortly", None, None).with_status(StatusCode::SERVICE_UNAVAILABLE))?;
    let mut out = String::with_capacity(size);
    out.push('[');
    for (i, rec) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        for (j, (k, v)) in keys.iter().zip(rec).enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push(':');
            if v == "NULL" {
                out.push_str("null");
            } else {
                out.push_str(&Value::String(v).to_string());
            }
        }
        out.push('}');
    }
    out.push(']');
    debug_assert!(out.len() <= size, "CSV rows took {} bytes, {size} estimated", out.len());
    Ok((out, Some(held)))
}

/// The length of `s` as a JSON string, as serde_json writes it (quotes; `\"`, `\\`
/// and `\n`-style escapes two bytes; other control characters `\u00XX`, six).
fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// [`csv_rows`] as a JSON value (tests, tools).
pub fn parse_csv(body: &[u8]) -> Result<Value, RestError> {
    let (text, _held) = csv_rows(body)?;
    serde_json::from_str(&text).map_err(|e| RestError::internal(anyhow::anyhow!("CSV rows: {e}")))
}

/// RFC 4180 records: fields split on `,`, records on CRLF or LF, `"..."` quoting
/// with `""` for a quote. None past the limits (a record of more than
/// [`MAX_CSV_COLUMNS`] fields, more fields than the header and [`MAX_CSV_CELLS`]
/// together): stopped as soon as they are passed, before more is held.
fn split_records(text: &str) -> Option<Vec<Vec<String>>> {
    const MAX_FIELDS: usize = MAX_CSV_CELLS + MAX_CSV_COLUMNS;
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut fields = 0usize;
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut end_field = |record: &mut Vec<String>, field: &mut String| -> Option<()> {
        fields += 1;
        if fields > MAX_FIELDS || record.len() >= MAX_CSV_COLUMNS {
            return None;
        }
        record.push(std::mem::take(field));
        Some(())
    };
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => end_field(&mut record, &mut field)?,
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                end_field(&mut record, &mut field)?;
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        end_field(&mut record, &mut field)?;
        records.push(record);
    }
    Some(records)
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

    #[test]
    fn a_csv_whose_rows_would_repeat_a_long_header_is_refused_before_it_is_built() {
        // 1 column, a 1.7 MB key, 100 000 empty rows: ~170 GB as JSON rows.
        let mut body = vec![b'k'; 100_000];
        body.extend(std::iter::repeat_n(b'\n', 100_001));
        let e = csv_rows(&body).unwrap_err();
        assert_eq!(e.status.as_u16(), 413, "{e:?}");
    }

    #[test]
    fn bodies_past_the_limits_stop_while_they_are_split() {
        for body in ["\n".repeat(2_000_000), ",".repeat(2_000_000), format!("a\n{}", "1\n".repeat(300_000))] {
            assert_eq!(csv_rows(body.as_bytes()).unwrap_err().status.as_u16(), 413);
        }
    }

    #[test]
    fn the_size_held_is_the_size_written() {
        for body in [&b"a,b\n\x01\x02,\"q\"\"\\\"\nNULL,\t\r\n"[..], b"k\n\n\n", "é,ü\n\u{7f},x\n".as_bytes()] {
            let (text, _held) = csv_rows(body).unwrap();
            let estimate = text.len();
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
            // (debug_assert in csv_rows checks the estimate bounds the text)
            assert!(estimate > 0);
        }
    }
}
