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
    /// More members than [`super::rows::MAX_KEYS`] (not kept): no function's named
    /// arguments match; a single json parameter may still take the whole body.
    pub too_many: bool,
    /// A body that is not JSON for a function of one unnamed parameter of this type
    /// (`bytea` for application/octet-stream, `text` for text/plain, `xml` for
    /// text/xml), in `raw` as that type's text input.
    pub raw_type: Option<&'static str>,
}

impl CallBody {
    /// Reads a JSON body; an empty body is `{}`.
    pub fn from_json(body: &[u8]) -> Result<CallBody, RestError> {
        // PostgREST's message, without the parser's detail (PostgREST issue 2344).
        let invalid = || RestError::of(pgrst::INVALID_BODY, "Empty or invalid json");
        if body.is_empty() {
            return Ok(CallBody { raw: "{}".into(), ..CallBody::object() });
        }
        let text = std::str::from_utf8(body).map_err(|_| invalid())?;
        if !super::rows::nesting_within(body, super::rows::MAX_NESTING) {
            return Err(super::rows::too_deep());
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let (members, object) = Level { top: true }.deserialize(&mut de).map_err(|_| invalid())?;
        de.end().map_err(|_| invalid())?;
        let too_many = members.is_none();
        Ok(CallBody { raw: text.to_owned(), args: members.unwrap_or_default(), object, too_many, raw_type: None })
    }

    fn object() -> CallBody {
        CallBody { raw: String::new(), args: Vec::new(), object: true, too_many: false, raw_type: None }
    }

    /// A raw body for a function of one unnamed parameter (PostgREST): bytes for
    /// `bytea` (as its hex input), UTF-8 text for `text` and `xml`.
    pub fn from_raw(ty: &'static str, body: &[u8]) -> Result<CallBody, RestError> {
        let raw = if ty == "bytea" {
            let mut hex = String::with_capacity(2 + body.len() * 2);
            hex.push_str("\\x");
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for b in body {
                hex.push(DIGITS[usize::from(b >> 4)] as char);
                hex.push(DIGITS[usize::from(b & 15)] as char);
            }
            hex
        } else {
            std::str::from_utf8(body).map_err(|_| RestError::of(pgrst::INVALID_BODY, "The request body is not valid UTF-8"))?.to_owned()
        };
        Ok(CallBody { raw, args: Vec::new(), object: false, too_many: false, raw_type: Some(ty) })
    }

    /// From a form's pairs (the last of a repeated name in `raw`).
    pub fn from_form(pairs: &[(String, String)]) -> CallBody {
        let object: serde_json::Map<String, serde_json::Value> = pairs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let args = pairs.iter().map(|(k, v)| (k.clone(), Arg::Text(v.clone()))).collect();
        CallBody { raw: serde_json::Value::Object(object).to_string(), args, ..CallBody::object() }
    }
}

/// Members (None: too many to keep) and whether they came from an object.
type Members = (Option<Vec<(String, Arg)>>, bool);

/// One level of the body: an object's members; at the top, an array's first
/// element's (an object's, nothing for anything else); nothing for a scalar.
#[derive(Clone, Copy)]
struct Level {
    top: bool,
}

const NONE: Members = (Some(Vec::new()), false);

impl<'de> DeserializeSeed<'de> for Level {
    type Value = Members;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = Members;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok((members(map)?, self.top))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = if self.top { seq.next_element_seed(Level { top: false })?.map(|(m, _)| m) } else { None };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((first.unwrap_or(Some(Vec::new())), false))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NONE)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NONE)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NONE)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NONE)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NONE)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NONE)
    }
}

/// An object's members (None past [`super::rows::MAX_KEYS`]: the rest is only
/// validated).
fn members<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Vec<(String, Arg)>>, A::Error> {
    let mut out: Option<Vec<(String, Arg)>> = Some(Vec::new());
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    while let Some(k) = map.next_key::<String>()? {
        let Some(list) = &mut out else {
            map.next_value::<IgnoredAny>()?;
            continue;
        };
        let raw: Box<RawValue> = map.next_value()?;
        let arg = Arg::from_raw(&raw).map_err(serde::de::Error::custom)?;
        // A repeated member: the last one counts (as a JSON object's).
        match at.get(&k) {
            Some(&i) => list[i].1 = arg,
            None if list.len() >= super::rows::MAX_KEYS => out = None,
            None => {
                at.insert(k.clone(), list.len());
                list.push((k, arg));
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
        assert!(CallBody::from_json(br#"[[{"a": 1}]]"#).unwrap().args.is_empty(), "only an array's first object gives arguments");
        let wide: Vec<String> = (0..2000).map(|i| format!("\"k{i}\": {i}")).collect();
        let b = CallBody::from_json(format!("{{{}}}", wide.join(",")).as_bytes()).unwrap();
        assert!(b.too_many && b.args.is_empty() && b.raw.len() > 2000, "a wide body is still the whole-body argument");
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
