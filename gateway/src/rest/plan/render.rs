//! The representation, rendered by the statement itself: the plan knows the media
//! type before it runs (as PostgREST's statements do), so JSON, a single object,
//! stripped nulls and CSV all come out of the one statement — no second round trip.

use crate::rest::prefer::Accept;

/// The rows the output columns aggregate (the statement's innermost row alias).
const ROWS: &str = "_pgs_t";

/// A row of `_pgs_t` as the JSON text `json_agg` gives each element (the same
/// `composite_to_json`), for [`crate::db::sql::Sql::json_rows`] statements.
/// (`_pgs_t.*`: the whole row even when a column is aliased `_pgs_t`.)
pub const ROW_JSON: &str = "row_to_json(_pgs_t.*)::text";

/// `json_agg`'s separator between elements (`[{..}, \n {..}]`): rows joined with it
/// are byte for byte the aggregate's text.
pub const AGG_SEPARATOR: &str = ", \n ";

/// The JSON array text of rows from a [`ROW_JSON`] statement, as `json_agg` (or
/// `[]` for none) renders it.
pub fn join_rows<'a>(rows: impl Iterator<Item = &'a str> + Clone) -> String {
    // Sized once: a read of many rows does not grow the body by doubling.
    let size = rows.clone().map(|r| r.len() + AGG_SEPARATOR.len()).sum::<usize>() + 2;
    let mut out = String::with_capacity(size);
    out.push('[');
    for (i, r) in rows.enumerate() {
        if i > 0 {
            out.push_str(AGG_SEPARATOR);
        }
        out.push_str(r);
    }
    out.push(']');
    out
}

/// The first three output columns over the rows `_pgs_t` (body, row count, single
/// row), in the form `accept` asks for. Only what the answer needs is aggregated: a
/// single object is not also rendered as an array, nor an array as an object.
pub fn columns(accept: Accept) -> String {
    // `_pgs_t.*` and count(*): the whole row and every row, even when an output
    // column is named `_pgs_t` (a bare `_pgs_t` would then be that column).
    let agg = format!("json_agg({ROWS}.*)");
    let body = match accept {
        Accept::Json => format!("coalesce({agg}, '[]')::text"),
        Accept::JsonStripped => format!("coalesce(json_strip_nulls({agg}), '[]')::text"),
        Accept::Csv => csv(),
        Accept::Object | Accept::ObjectStripped => "NULL::text".to_owned(),
    };
    let object = match accept {
        Accept::Object => format!("CASE WHEN count(*) = 1 THEN ({agg} -> 0)::text END"),
        Accept::ObjectStripped => format!("CASE WHEN count(*) = 1 THEN json_strip_nulls({agg} -> 0)::text END"),
        _ => "NULL::text".to_owned(),
    };
    format!("{body}, count(*), {object}")
}

/// The rows `_pgs_t` as CSV, as PostgREST's statement renders them: a header of the
/// first row's keys joined by commas, a line break, then each row's text form
/// without its parentheses (Postgres's own quoting: `"a b"`, `""` for a quote,
/// `{a,b}` arrays, `t`/`f`, an empty field for NULL) joined by line breaks. No rows:
/// a lone line break, as PostgREST.
pub fn csv() -> String {
    // `_pgs_t.*`: the whole row even when a column is named `_pgs_t`.
    format!(
        "(SELECT coalesce(string_agg(_pgs_k, ','), '') FROM json_object_keys(json_agg({ROWS}.*) -> 0) AS _pgs_k) || E'\\n' || \
         coalesce(string_agg(substring(({ROWS}.*)::text, 2, length(({ROWS}.*)::text) - 2), E'\\n'), '')"
    )
}
