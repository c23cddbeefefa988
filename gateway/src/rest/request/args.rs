//! A function call's arguments, read without building the body's values: each
//! top-level member is kept as its raw JSON text (strings unquoted), the form Postgres
//! receives them in. A `serde_json::Value` of a large argument took 10–20× its text.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::code::pgrst;
use crate::rest::error::RestError;

/// One argument's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// JSON null (SQL NULL).
    Null,
    /// A string: a JSON string's content, a query-string or form value.
    Text(String),
    /// The JSON text of a number, boolean, object or array.
    Json(String),
}

impl Arg {
    /// From a member's raw JSON.
    fn from_raw(raw: &RawValue) -> Result<Arg, serde_json::Error> {
        let text = raw.get();
        Ok(match text.as_bytes().first() {
            Some(b'"') => Arg::Text(serde_json::from_str(text)?),
            Some(b'n') => Arg::Null,
            _ => Arg::Json(text.to_owned()),
        })
    }

    /// The text parameter of an ordinary argument (None = NULL).
    pub fn text(&self) -> Option<&str> {
        match self {
            Arg::Null => None,
            Arg::Text(s) | Arg::Json(s) => Some(s),
        }
    }

    /// As an element of a JSON array.
    fn json(&self) -> String {
        match self {
            Arg::Null => "null".into(),
            Arg::Text(s) => serde_json::Value::String(s.clone()).to_string(),
            Arg::Json(j) => j.clone(),
        }
    }

    /// The JSON array a VARIADIC argument takes: an array as it is, any other value
    /// an array of one, repeated values (`?v=1&v=2`) an array of each.
    pub fn variadic(items: &[Arg]) -> Option<String> {
        match items {
            [] | [Arg::Null] => None,
            [Arg::Json(j)] if j.starts_with('[') => Some(j.clone()),
            _ => Some(format!("[{}]", items.iter().map(Arg::json).collect::<Vec<_>>().join(","))),
        }
    }
}

/// A call's body.
#[derive(Debug, Default)]
pub struct CallBody {
    /// The whole body (a function of one unnamed json/jsonb parameter takes it).
    pub raw: String,
    /// Named arguments: an object's members, or those of an array's first object
    /// (as PostgREST binds them); none for any other JSON.
    pub args: Vec<(String, Arg)>,
    /// The body was an object (or an empty body, read as `{}`).
    pub object: bool,
}

impl CallBody {
    /// Reads a JSON body; an empty body is `{}`.
    pub fn from_json(body: &[u8]) -> Result<CallBody, RestError> {
        // PostgREST's message, without the parser's detail (PostgREST issue 2344).
        let invalid = || RestError::of(pgrst::INVALID_BODY, "Empty or invalid json");
        if body.is_empty() {
            return Ok(CallBody { raw: "{}".into(), args: Vec::new(), object: true });
        }
        let text = std::str::from_utf8(body).map_err(|_| invalid())?;
        let mut de = serde_json::Deserializer::from_str(text);
        let (args, object) = Top.deserialize(&mut de).map_err(|_| invalid())?;
        de.end().map_err(|_| invalid())?;
        Ok(CallBody { raw: text.to_owned(), args, object })
    }

    /// From a form's pairs (the last of a repeated name in `raw`).
    pub fn from_form(pairs: &[(String, String)]) -> CallBody {
        let object: serde_json::Map<String, serde_json::Value> = pairs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let args = pairs.iter().map(|(k, v)| (k.clone(), Arg::Text(v.clone()))).collect();
        CallBody { raw: serde_json::Value::Object(object).to_string(), args, object: true }
    }
}

/// The top level: an object's members, an array's first object's, or nothing.
struct Top;

impl<'de> DeserializeSeed<'de> for Top {
    type Value = (Vec<(String, Arg)>, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Top)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = (Vec<(String, Arg)>, bool);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok((members(map)?, true))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element_seed(First)?.unwrap_or_default();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((first, false))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
}

/// An array's first element: its members when it is an object.
struct First;

impl<'de> DeserializeSeed<'de> for First {
    type Value = Vec<(String, Arg)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(Top.deserialize(d)?.0)
    }
}

fn members<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<(String, Arg)>, A::Error> {
    let mut out: Vec<(String, Arg)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    while let Some(k) = map.next_key::<String>()? {
        let raw: Box<RawValue> = map.next_value()?;
        let arg = Arg::from_raw(&raw).map_err(serde::de::Error::custom)?;
        // A repeated member: the last one counts (as a JSON object's).
        match at.get(&k) {
            Some(&i) => out[i].1 = arg,
            None => {
                if out.len() >= super::rows::MAX_KEYS {
                    return Err(serde::de::Error::custom("too many arguments"));
                }
                at.insert(k.clone(), out.len());
                out.push((k, arg));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Arg, CallBody};

    #[test]
    fn members_keep_their_json_text() {
        let b = CallBody::from_json(br#"{"a": 1, "b": "t\u00e9", "c": null, "d": [1, {"x": 2}], "a": 3}"#).unwrap();
        assert!(b.object);
        assert_eq!(
            b.args,
            vec![("a".into(), Arg::Json("3".into())), ("b".into(), Arg::Text("té".into())), ("c".into(), Arg::Null), ("d".into(), Arg::Json(r#"[1, {"x": 2}]"#.into()))]
        );
        let b = CallBody::from_json(br#"[{"a": true}, {"b": 2}]"#).unwrap();
        assert_eq!((b.object, b.args), (false, vec![("a".into(), Arg::Json("true".into()))]));
        assert_eq!(CallBody::from_json(b"").unwrap().raw, "{}");
        assert!(CallBody::from_json(b"42").unwrap().args.is_empty());
        for bad in [&b"{oops"[..], b"{} x", b"\xff"] {
            assert_eq!(CallBody::from_json(bad).unwrap_err().code, "PGRST102");
        }
    }

    #[test]
    fn variadic_arguments_are_arrays() {
        assert_eq!(Arg::variadic(&[Arg::Json("[1,2]".into())]).as_deref(), Some("[1,2]"));
        assert_eq!(Arg::variadic(&[Arg::Text("a".into())]).as_deref(), Some(r#"["a"]"#));
        assert_eq!(Arg::variadic(&[Arg::Text("a\"".into()), Arg::Text("b".into())]).as_deref(), Some(r#"["a\"","b"]"#));
        assert_eq!(Arg::variadic(&[Arg::Null]), None);
    }
}
