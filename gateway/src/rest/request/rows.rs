//! A write's rows, read without building them: the body is checked to be a JSON
//! object or an array of objects, and only the keys are collected (each value is
//! skipped by the parser). The rows travel to Postgres as the body's own text, which
//! Postgres parses once. A `serde_json::Value` of many small objects takes 10–20× its
//! text in memory, and it was built (and cloned) for every insert.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::code::pgrst;
use crate::rest::error::RestError;

/// Most distinct keys of an object read as columns (Postgres's limit of columns per
/// table). A wider object is still valid JSON: with `columns=` it may be written.
pub const MAX_KEYS: usize = 1600;

/// Deepest nesting of arrays and objects a body may have. Postgres's JSON parser
/// recurses per level and fails at its stack limit (54001, a server error), so
/// deeper bodies are refused here first.
pub const MAX_NESTING: usize = 512;

/// The nesting of `text` (valid JSON or not) stays within `max`: one pass over the
/// bytes, strings skipped.
pub fn nesting_within(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The error of a body nested too deep.
pub fn too_deep() -> RestError {
    RestError::of(pgrst::INVALID_BODY, format!("the body nests arrays and objects more than {MAX_NESTING} levels deep"))
}

/// The rows of a write.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// The rows as the text of a JSON array of objects.
    pub json: String,
    /// How many rows.
    pub len: usize,
    /// The first row's keys, sorted, each once (None when there are no rows).
    pub first_keys: Option<Vec<String>>,
    /// Every row has exactly the first row's keys (PostgREST's uniform bulk bodies).
    pub uniform: bool,
    /// Some object has more than [`MAX_KEYS`] keys (not collected): usable only with
    /// `columns=`.
    pub wide: bool,
    /// The receive budget held for rows built from a smaller body (CSV), released
    /// with them.
    pub held: Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl Rows {
    /// Reads a JSON body: an object (one row) or an array of objects.
    pub fn from_json(body: &[u8]) -> Result<Rows, RestError> {
        let text = std::str::from_utf8(body).map_err(|_| invalid())?;
        let (shape, rows) = Rows::scan(text)?;
        let json = match shape {
            Shape::Object => format!("[{text}]"),
            Shape::Array => text.to_owned(),
        };
        Ok(Rows { json, ..rows })
    }

    /// Reads JSON text built by the gateway (CSV rows), kept without a copy.
    pub fn from_json_string(text: String) -> Result<Rows, RestError> {
        let (shape, rows) = Rows::scan(&text)?;
        let json = match shape {
            Shape::Object => format!("[{text}]"),
            Shape::Array => text,
        };
        Ok(Rows { json, ..rows })
    }

    /// Checks `text` and collects its keys (the rows' text is left to the caller).
    fn scan(text: &str) -> Result<(Shape, Rows), RestError> {
        if !nesting_within(text.as_bytes(), MAX_NESTING) {
            return Err(too_deep());
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let mut scan = Scan { len: 0, first: None, uniform: true, wide: false, shape: None };
        (&mut scan).deserialize(&mut de).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => keys_must_match(),
            _ => invalid(),
        })?;
        de.end().map_err(|_| invalid())?;
        let shape = scan.shape.ok_or_else(keys_must_match)?;
        Ok((shape, Rows { json: String::new(), len: scan.len, first_keys: scan.first, uniform: scan.uniform && !scan.wide, wide: scan.wide, held: None }))
    }

    /// Rows from a value built another way (CSV, a form, a batch operation).
    pub fn from_value(v: &Value) -> Result<Rows, RestError> {
        Rows::from_json(v.to_string().as_bytes())
    }
}

fn invalid() -> RestError {
    RestError::of(pgrst::INVALID_BODY, "Empty or invalid json")
}

fn keys_must_match() -> RestError {
    RestError::of(pgrst::INVALID_BODY, "All object keys must match")
}

#[derive(Clone, Copy)]
enum Shape {
    Object,
    Array,
}

struct Scan {
    len: usize,
    first: Option<Vec<String>>,
    uniform: bool,
    wide: bool,
    shape: Option<Shape>,
}

impl Scan {
    fn row(&mut self, keys: Option<Vec<String>>) {
        let Some(keys) = keys else {
            self.wide = true;
            self.len += 1;
            return;
        };
        match &self.first {
            None => self.first = Some(keys),
            Some(first) => self.uniform &= *first == keys,
        }
        self.len += 1;
    }
}

impl<'de> DeserializeSeed<'de> for &mut Scan {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

// Anything else (scalars; an array in an array) is serde's invalid-type error, a
// data error: "All object keys must match", as PostgREST answers.
impl<'de> Visitor<'de> for &mut Scan {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.shape = Some(Shape::Object);
        let keys = keys_of(map)?;
        self.row(keys);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.shape = Some(Shape::Array);
        while let Some(keys) = seq.next_element_seed(ObjectKeys)? {
            self.row(keys);
        }
        Ok(())
    }
}

/// The keys of an object, sorted, each once (None past [`MAX_KEYS`]: the rest is
/// only validated); its values skipped. Repeated keys are folded as they come, so an
/// object of many repeats holds at most 2 × [`MAX_KEYS`].
fn keys_of<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Vec<String>>, A::Error> {
    let mut keys = Some(Vec::new());
    let fold = |keys: &mut Option<Vec<String>>| {
        if let Some(k) = keys {
            k.sort_unstable();
            k.dedup();
            if k.len() > MAX_KEYS {
                *keys = None;
            }
        }
    };
    while let Some(k) = map.next_key::<String>()? {
        map.next_value::<IgnoredAny>()?;
        if let Some(list) = &mut keys {
            list.push(k);
            if list.len() > 2 * MAX_KEYS {
                fold(&mut keys);
            }
        }
    }
    fold(&mut keys);
    Ok(keys)
}

/// One element of a bulk body: an object, or the error.
struct ObjectKeys;

impl<'de> DeserializeSeed<'de> for ObjectKeys {
    type Value = Option<Vec<String>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ObjectKeys)
    }
}

impl<'de> Visitor<'de> for ObjectKeys {
    type Value = Option<Vec<String>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        keys_of(map)
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;

    fn keys(r: &Rows) -> Vec<&str> {
        r.first_keys.as_deref().unwrap_or_default().iter().map(String::as_str).collect()
    }

    #[test]
    fn objects_and_arrays_of_objects_are_rows() {
        let r = Rows::from_json(br#"{"b": 1, "a": {"deep": [1, 2, {"x": "y"}]}}"#).unwrap();
        assert_eq!((r.len, keys(&r), r.uniform), (1, vec!["a", "b"], true));
        assert_eq!(r.json, r#"[{"b": 1, "a": {"deep": [1, 2, {"x": "y"}]}}]"#);
        let r = Rows::from_json(br#" [{"a": 1, "b": "\u00e9"}, {"b": null, "a": 2}] "#).unwrap();
        assert_eq!((r.len, keys(&r), r.uniform), (2, vec!["a", "b"], true));
        let r = Rows::from_json(br#"[{"a": 1}, {"a": 2, "b": 3}]"#).unwrap();
        assert_eq!((r.len, r.uniform), (2, false));
        let r = Rows::from_json(br#"[{"a": 1, "a": 2}, {"a": 3}]"#).unwrap();
        assert_eq!((keys(&r), r.uniform), (vec!["a"], true), "a repeated key is one column");
        let r = Rows::from_json(b"[]").unwrap();
        assert_eq!((r.len, r.first_keys.is_none()), (0, true));
        let many: Vec<String> = (0..1601).map(|i| format!("\"k{i}\": 0")).collect();
        let wide = Rows::from_json(format!("[{{{}}}, {{\"a\": 1}}]", many.join(",")).as_bytes()).unwrap();
        assert_eq!((wide.len, wide.wide, wide.uniform), (2, true, false), "a wide object is JSON, usable with columns=");
        let repeats = format!("{{{}}}", vec!["\"a\": 0"; 100_000].join(","));
        assert_eq!(keys(&Rows::from_json(repeats.as_bytes()).unwrap()), vec!["a"]);
        let r = Rows::from_json(b"{}").unwrap();
        assert_eq!((r.len, keys(&r).len()), (1, 0));
    }

    #[test]
    fn anything_else_is_refused_as_postgrest_refuses_it() {
        for (body, message) in [
            (&b"1"[..], "All object keys must match"),
            (b"\"x\"", "All object keys must match"),
            (b"[1, 2]", "All object keys must match"),
            (b"[{\"a\": 1}, [1]]", "All object keys must match"),
            (b"null", "All object keys must match"),
            (b"{oops", "Empty or invalid json"),
            (b"[{\"a\": 1}] trailing", "Empty or invalid json"),
            (b"\xff", "Empty or invalid json"),
            (b"", "Empty or invalid json"),
        ] {
            let e = Rows::from_json(body).unwrap_err();
            assert_eq!((e.code.as_str(), e.message.as_str()), ("PGRST102", message), "{:?}", String::from_utf8_lossy(body));
        }
        // Postgres's JSON parser recurses per level: deep bodies are refused first.
        let deep = |n: usize| format!("{{\"a\": {}{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(Rows::from_json(deep(100_000).as_bytes()).unwrap_err().message, super::too_deep().message);
        assert!(Rows::from_json(deep(500).as_bytes()).is_ok());
        assert!(Rows::from_json(br#"[{"a": "[[[[{{{{\"]]"}]"#).is_ok(), "brackets in strings do not count");
    }
}
