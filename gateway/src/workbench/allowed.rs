//! A saved configuration's `allowed_tables` (seed 001), enforced on PostgreSQL's
//! parse tree: the relations a statement names, its kind, and the functions it calls.

use axum::http::StatusCode;

use super::error::WbError;
use crate::error::code::workbench as code;

/// Functions a configuration with allowed_tables may call: ones that compute, none
/// that runs SQL text or reads files or other objects by name.
const PLAIN_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "lower",
    "upper",
    "length",
    "char_length",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "now",
    "date_trunc",
    "extract",
    "date_part",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "round",
    "trunc",
    "floor",
    "ceil",
    "ceiling",
    "abs",
    "mod",
    "power",
    "sqrt",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "substring",
    "substr",
    "concat",
    "concat_ws",
    "replace",
    "split_part",
    "position",
    "strpos",
    "left",
    "right",
    "lpad",
    "rpad",
    "md5",
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "ntile",
    "percent_rank",
    "cume_dist",
    "bool_and",
    "bool_or",
    "every",
    "age",
    "make_date",
    "make_interval",
    "array_length",
    "cardinality",
    "unnest",
    "stddev",
    "variance",
    "percentile_cont",
    "percentile_disc",
    "initcap",
    "regexp_replace",
    "regexp_match",
    "starts_with",
    "to_json",
    "to_jsonb",
    "jsonb_array_length",
    "jsonb_typeof",
    "date",
    "timezone",
];

/// Refuses a statement that could reach past `allowed`: a relation outside it
/// (unqualified names are `public.` ones: the statement then runs with `search_path =
/// public`), a statement other than a read or DML, or a function outside
/// [`PLAIN_FUNCTIONS`] (`query_to_xml`, `dblink` … run SQL of their own). The
/// database user's own privileges stay the real limit; this keeps the tool to the
/// configuration's tables.
pub fn check_allowed(st: &crate::db::classify::Statement, allowed: &Option<Vec<String>>) -> Result<(), WbError> {
    if allowed.is_none() {
        return Ok(());
    }
    let refuse = |m: String| WbError::new(StatusCode::FORBIDDEN, code::PERMISSION_DENIED, m).hint("This configuration is limited to its allowed_tables.");
    if !matches!(st.kind, crate::db::classify::Kind::Select | crate::db::classify::Kind::Dml { .. }) && st.node != "ExplainStmt" {
        return Err(refuse(format!("{} is not allowed on a configuration with allowed_tables", super::run::command_of(&st.node))));
    }
    if let Some(f) = st.functions.iter().find(|f| !PLAIN_FUNCTIONS.contains(&f.as_str())) {
        return Err(refuse(format!("the function {f} is not allowed on a configuration with allowed_tables")));
    }
    for (schema, name) in &st.relations {
        let schema = schema.as_deref().unwrap_or("public");
        if !self::allowed(allowed, schema, name) {
            return Err(WbError::new(StatusCode::FORBIDDEN, code::PERMISSION_DENIED, format!("{schema}.{name} is not among this configuration's allowed_tables")));
        }
    }
    Ok(())
}

/// Whether `schema.table` is allowed (no list = everything).
pub fn allowed(list: &Option<Vec<String>>, schema: &str, table: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|a| a == &format!("{schema}.{table}") || (schema == "public" && a == table)))
}
