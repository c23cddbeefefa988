//! SQL text with positional binds. Values only ever enter as `$n::text` parameters;
//! identifiers only through [`ident`] after the schema cache has vouched for them.

/// A statement under construction.
#[derive(Debug, Default, Clone)]
pub struct Sql {
    /// The text.
    pub text: String,
    /// Parameters, all sent as text (NULL = None).
    pub params: Vec<Option<String>>,
    /// A planner estimate of the row count to run beside the statement, over the
    /// same parameters (REST's `Prefer: count=planned|estimated`).
    pub estimate: Option<Estimate>,
    /// The statement returns one row per result row (its JSON text, one column)
    /// instead of the aggregated 4-column row: a plain JSON array read, without an
    /// aggregate for Postgres to set up (see `rest::plan::render::ROW_JSON`).
    pub json_rows: bool,
}

/// `EXPLAIN (FORMAT JSON)` of a count query, and when its estimate replaces the
/// statement's own count.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    /// The EXPLAIN statement (its `$n` are the statement's parameters).
    pub explain: String,
    /// `None`: the estimate is the total; `Some(n)`: it replaces an exact count above n.
    pub above: Option<i64>,
}

/// "Plan Rows" of an `EXPLAIN (FORMAT JSON)` result.
pub fn plan_rows(explain_json: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(explain_json).ok()?;
    v.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64().map(|n| n as i64)
}

impl Sql {
    /// Appends raw SQL (never user input).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    /// Adds a text parameter and returns its placeholder `$n::text`.
    pub fn bind(&mut self, v: impl Into<Option<String>>) -> String {
        let mut p = String::with_capacity(12);
        self.push_param(&mut p, v);
        p
    }
    /// Adds a text parameter and writes its placeholder `$n::text` into `out` (no
    /// string of its own).
    pub fn push_param(&mut self, out: &mut String, v: impl Into<Option<String>>) {
        use std::fmt::Write;
        self.params.push(v.into());
        let _ = write!(out, "${}::text", self.params.len());
    }
    /// Binds and appends.
    pub fn push_bind(&mut self, v: impl Into<Option<String>>) -> &mut Self {
        let p = self.bind(v);
        self.push(&p)
    }
}

/// A quoted identifier: `"a""b"`.
pub fn ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    push_ident(&mut s, name);
    s
}

/// Appends [`ident`]`(name)` to `out`.
pub fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    let mut rest = name;
    while let Some(i) = rest.find('"') {
        out.push_str(&rest[..=i]);
        out.push('"');
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// A quoted string literal: `'it''s'` (for catalog names written into SQL; request
/// values are always bind parameters).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    let mut s = String::with_capacity(schema.len() + name.len() + 5);
    push_ident(&mut s, schema);
    s.push('.');
    push_ident(&mut s, name);
    s
}

/// A Postgres array literal of text values: `{"a","b\"c"}`.
pub fn array_literal<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut s = String::from("{");
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_numbered_text_parameters() {
        let mut s = Sql::default();
        s.push("a = ").push_bind("x".to_owned()).push(" AND b = ").push_bind(None);
        assert_eq!(s.text, "a = $1::text AND b = $2::text");
        assert_eq!(s.params, vec![Some("x".into()), None]);
    }

    #[test]
    fn identifiers_and_literals_are_escaped() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(ident(r#""""#), r#""""""""#);
        assert_eq!(ident(r#"a"b"c""#), r#""a""b""c""""#);
        assert_eq!(ident("plain é"), "\"plain é\"");
        assert_eq!(ident(""), r#""""#);
        assert_eq!(qualified(r#"s"1"#, "t"), r#""s""1"."t""#);
        assert_eq!(array_literal(["a", r#"b"c"#, r"d\"]), r#"{"a","b\"c","d\\"}"#);
    }
}
