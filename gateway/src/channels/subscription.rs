//! What a channel subscribed to with `config.postgres_changes`: bindings (event,
//! schema, table, filter), read from the join and matched against captured rows,
//! and who the subscriber is to Postgres.

use std::sync::Arc;

use serde_json::{json, Value};

use super::queue::SocketTx;

/// Which row events a binding wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    All,
    Insert,
    Update,
    Delete,
}

impl Ev {
    fn parse(s: &str) -> Option<Ev> {
        match s {
            "*" => Some(Ev::All),
            "INSERT" | "insert" => Some(Ev::Insert),
            "UPDATE" | "update" => Some(Ev::Update),
            "DELETE" | "delete" => Some(Ev::Delete),
            _ => None,
        }
    }
    fn wants(self, op: &str) -> bool {
        matches!((self, op), (Ev::All, _) | (Ev::Insert, "INSERT") | (Ev::Update, "UPDATE") | (Ev::Delete, "DELETE"))
    }
}

/// A filter `column=op.value` (eq, neq, lt, lte, gt, gte, in).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    column: String,
    op: String,
    values: Vec<String>,
    /// The values read as numbers once, when parsed (never per change).
    numbers: Vec<Option<f64>>,
    /// `in`: the values as a set, and their numbers' bits, for one look-up per row.
    text_set: std::collections::HashSet<String>,
    number_set: std::collections::HashSet<u64>,
}

/// An f64's bits, with -0 as 0 (so `0` finds `-0.0`).
fn number_key(n: f64) -> u64 {
    if n == 0.0 {
        0
    } else {
        n.to_bits()
    }
}

/// Longest filter accepted.
const MAX_FILTER: usize = 1024;
/// Most values in an `in.(...)` list.
const MAX_IN: usize = 100;

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, String> {
        let bad = || format!("invalid filter: {s}");
        if s.len() > MAX_FILTER {
            return Err("filter too long".into());
        }
        let (column, rest) = s.split_once('=').ok_or_else(bad)?;
        let (op, value) = rest.split_once('.').ok_or_else(bad)?;
        if column.is_empty() {
            return Err(bad());
        }
        // One condition per subscription, as Realtime: `a=eq.1,b=eq.2` is refused, not
        // read as one odd value.
        let second = value
            .split(',')
            .skip(1)
            .any(|part| part.split_once('=').is_some_and(|(c, rest)| !c.is_empty() && c.chars().all(|ch| ch.is_alphanumeric() || ch == '_') && rest.contains('.')));
        if op != "in" && second {
            return Err("only one filter condition is supported".into());
        }
        let values = match op {
            "eq" | "neq" | "lt" | "lte" | "gt" | "gte" => vec![value.to_owned()],
            "in" => {
                let inner = value.strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or_else(bad)?;
                let vals: Vec<String> = inner.split(',').map(|v| v.trim().trim_matches('"').to_owned()).collect();
                if vals.len() > MAX_IN {
                    return Err(format!("at most {MAX_IN} values in an in filter"));
                }
                vals
            }
            _ => return Err(format!("unsupported filter operator '{op}' (eq, neq, lt, lte, gt, gte, in)")),
        };
        let numbers: Vec<Option<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
        let (text_set, number_set) = if op == "in" { (values.iter().cloned().collect(), numbers.iter().flatten().map(|n| number_key(*n)).collect()) } else { Default::default() };
        Ok(Filter { column: column.to_owned(), op: op.to_owned(), values, numbers, text_set, number_set })
    }

    /// Whether a record passes (values compared as numbers when the column holds a
    /// number, as booleans for booleans, otherwise as text).
    pub fn matches(&self, record: &Value) -> bool {
        let v = &record[&self.column];
        if self.op == "in" {
            return match v {
                Value::Number(n) => n.as_f64().is_some_and(|n| self.number_set.contains(&number_key(n))),
                Value::Bool(b) => self.text_set.iter().any(|w| matches!((b, w.as_str()), (true, "true" | "t") | (false, "false" | "f"))),
                Value::String(s) => self.text_set.contains(s.as_str()),
                Value::Null => false,
                other => self.text_set.contains(&other.to_string()),
            };
        }
        let cmp = |want: &str, number: Option<f64>| -> Option<std::cmp::Ordering> {
            match v {
                Value::Number(n) => n.as_f64()?.partial_cmp(&number?),
                Value::Bool(b) => {
                    let w = match want {
                        "true" | "t" => true,
                        "false" | "f" => false,
                        _ => return None,
                    };
                    Some(b.cmp(&w))
                }
                Value::String(s) => Some(s.as_str().cmp(want)),
                Value::Null => None,
                other => Some(other.to_string().as_str().cmp(want)),
            }
        };
        use std::cmp::Ordering::*;
        let Some(o) = cmp(&self.values[0], self.numbers[0]) else { return false };
        match self.op.as_str() {
            "eq" => o == Equal,
            "neq" => o != Equal,
            "lt" => o == Less,
            "lte" => o != Greater,
            "gt" => o == Greater,
            _ => o != Less,
        }
    }
}

/// One `postgres_changes` entry of a join.
#[derive(Clone, Debug)]
pub struct Binding {
    pub id: u64,
    pub event: Ev,
    pub schema: String,
    pub table: Option<String>,
    pub filter: Option<Filter>,
}

impl Binding {
    pub fn wants(&self, schema: &str, table: &str, op: &str, row: &Value) -> bool {
        self.schema == schema && self.table.as_deref().is_none_or(|t| t == table) && self.event.wants(op) && self.filter.as_ref().is_none_or(|f| f.matches(row))
    }
}

/// Reads a join's `config.postgres_changes`: each entry echoed with its id.
pub fn parse_bindings(list: &Value, next_id: &mut u64) -> Result<(Vec<Value>, Vec<Binding>), String> {
    let Some(items) = list.as_array() else {
        return if list.is_null() { Ok((vec![], vec![])) } else { Err("postgres_changes must be a list".into()) };
    };
    if items.len() > 100 {
        return Err("at most 100 postgres_changes per channel".into());
    }
    let (mut echo, mut out) = (Vec::new(), Vec::new());
    for it in items {
        let Some(o) = it.as_object() else { return Err("each postgres_changes entry must be an object".into()) };
        let text = |k: &str| -> Result<Option<String>, String> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                // A filter has its own bounds (MAX_FILTER, MAX_IN in Filter::parse).
                Some(Value::String(s)) if s.len() <= if k == "filter" { MAX_FILTER } else { 256 } => Ok(Some(s.clone())),
                _ => Err(format!("postgres_changes.{k} must be a short string")),
            }
        };
        let event = text("event")?.ok_or("postgres_changes.event is required")?;
        let event = Ev::parse(&event).ok_or_else(|| format!("unknown postgres_changes event '{event}' (INSERT, UPDATE, DELETE or *)"))?;
        let schema = text("schema")?.unwrap_or_else(|| "public".into());
        let table = text("table")?.filter(|t| t != "*");
        let filter = text("filter")?.map(|f| Filter::parse(&f)).transpose()?;
        *next_id += 1;
        let mut e = it.clone();
        e["id"] = json!(*next_id);
        echo.push(e);
        out.push(Binding { id: *next_id, event, schema, table, filter });
    }
    Ok((echo, out))
}

/// Who a subscriber is to Postgres.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
pub struct Who {
    pub role: String,
    pub claims: String,
}

/// A channel's postgres_changes.
#[derive(Clone)]
pub struct Subscription {
    pub socket: SocketTx,
    pub topic: String,
    pub bindings: Vec<Binding>,
    pub who: Arc<Who>,
    /// When the subscriber's token expires (seconds since the epoch): nothing is
    /// delivered after it, even before the socket's own loop closes the channel.
    pub exp: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match_like_realtime() {
        let f = Filter::parse("id=eq.3").unwrap();
        assert!(f.matches(&json!({"id": 3})) && !f.matches(&json!({"id": 4})) && !f.matches(&json!({})));
        assert!(Filter::parse("n=gt.2").unwrap().matches(&json!({"n": 2.5})));
        assert!(Filter::parse("n=lte.2").unwrap().matches(&json!({"n": 2})));
        assert!(Filter::parse("s=neq.a").unwrap().matches(&json!({"s": "b"})));
        assert!(Filter::parse("s=in.(a,b)").unwrap().matches(&json!({"s": "b"})));
        assert!(!Filter::parse("s=in.(a,b)").unwrap().matches(&json!({"s": "c"})));
        assert!(Filter::parse("done=eq.true").unwrap().matches(&json!({"done": true})));
        assert!(Filter::parse("t=lt.2024-02-01").unwrap().matches(&json!({"t": "2024-01-31T10:00:00"})));
        assert!(Filter::parse("s=eq.a,b").unwrap().matches(&json!({"s": "a,b"})));
        for bad in ["id", "id=eq", "id=like.x", "=eq.1", "id=in.1,2", "a=eq.1,b=eq.2"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        assert!(Filter::parse(&format!("id=in.({})", vec!["1"; 200].join(","))).is_err());
    }

    #[test]
    fn bindings_echo_the_clients_entries_with_ids() {
        let mut next = 0;
        let (echo, b) =
            parse_bindings(&json!([{"event": "INSERT", "schema": "public", "table": "todos"}, {"event": "*", "schema": "public", "filter": "id=eq.1"}]), &mut next).unwrap();
        assert_eq!(echo[0], json!({"event": "INSERT", "schema": "public", "table": "todos", "id": 1}));
        assert_eq!(echo[1]["id"], 2);
        assert!(b[0].wants("public", "todos", "INSERT", &json!({})) && !b[0].wants("public", "todos", "UPDATE", &json!({})));
        assert!(b[1].wants("public", "any", "DELETE", &json!({"id": 1})) && !b[1].wants("public", "any", "DELETE", &json!({"id": 2})));
        assert!(parse_bindings(&json!([{"event": "TRUNCATE", "schema": "public"}]), &mut next).is_err());
        assert!(parse_bindings(&json!([{"schema": "public"}]), &mut next).is_err());
        assert!(parse_bindings(&json!("x"), &mut next).is_err());
        assert_eq!(parse_bindings(&Value::Null, &mut next).unwrap().0.len(), 0);
    }
}
