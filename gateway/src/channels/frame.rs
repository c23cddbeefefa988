//! Phoenix channel frames as @supabase/realtime-js speaks them.
//!
//! * `vsn=1.0.0`: JSON objects `{"join_ref","ref","topic","event","payload"}`.
//! * `vsn=2.0.0` (realtime-js's default): JSON arrays `[join_ref, ref, topic, event,
//!   payload]`, and one binary frame from the client: a user broadcast (kind 3:
//!   `3, join_ref_len, ref_len, topic_len, event_len, metadata_len, encoding, join_ref,
//!   ref, topic, event, metadata, payload`), read here as the JSON `broadcast` push it
//!   stands for. The server only sends text frames (the client decodes no other
//!   binary kind than user broadcasts, which it also takes as JSON).

use serde_json::{json, Value};

/// Largest frame accepted (bytes); larger ones are refused before parsing.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Nesting accepted inside a payload (serde_json stops at 128 anyway).
const MAX_DEPTH: usize = 64;

/// The protocol version a socket negotiated (`vsn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    /// JSON objects.
    V1,
    /// JSON arrays (and binary user broadcasts from the client).
    V2,
}

impl Vsn {
    /// `vsn` from the query string: absent means 1.0.0, as Phoenix.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            _ => None,
        }
    }
}

/// One channel message in either direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Msg {
    pub join_ref: Option<String>,
    pub r#ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Msg {
    /// A server push (no refs unless given).
    pub fn push(join_ref: Option<&str>, topic: &str, event: &str, payload: Value) -> Msg {
        Msg { join_ref: join_ref.map(str::to_owned), r#ref: None, topic: topic.to_owned(), event: event.to_owned(), payload }
    }

    /// The reply to `to` with a status and a response.
    pub fn reply(to: &Msg, status: &str, response: Value) -> Msg {
        Msg { join_ref: to.join_ref.clone(), r#ref: to.r#ref.clone(), topic: to.topic.clone(), event: "phx_reply".into(), payload: json!({"status": status, "response": response}) }
    }
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame(pub &'static str);

fn opt_ref(v: &Value) -> Result<Option<String>, BadFrame> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(BadFrame("refs must be strings")),
    }
}

fn depth_ok(v: &Value) -> bool {
    // Iterative: a hostile payload cannot recurse the stack.
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return false;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    true
}

/// Reads a text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Msg, BadFrame> {
    if text.len() > MAX_FRAME {
        return Err(BadFrame("frame too large"));
    }
    let v: Value = serde_json::from_str(text).map_err(|_| BadFrame("a frame must be JSON"))?;
    if !depth_ok(&v) {
        return Err(BadFrame("payload nested too deeply"));
    }
    let (join_ref, r, topic, event, payload) = match (vsn, v) {
        (Vsn::V2, Value::Array(mut a)) if a.len() == 5 => {
            let payload = a.pop().unwrap_or(Value::Null);
            let event = a.pop().unwrap_or(Value::Null);
            let topic = a.pop().unwrap_or(Value::Null);
            let r = a.pop().unwrap_or(Value::Null);
            let join_ref = a.pop().unwrap_or(Value::Null);
            (join_ref, r, topic, event, payload)
        }
        (Vsn::V1, Value::Object(mut o)) => (
            o.remove("join_ref").unwrap_or(Value::Null),
            o.remove("ref").unwrap_or(Value::Null),
            o.remove("topic").unwrap_or(Value::Null),
            o.remove("event").unwrap_or(Value::Null),
            o.remove("payload").unwrap_or(Value::Null),
        ),
        (Vsn::V2, _) => return Err(BadFrame("expected [join_ref, ref, topic, event, payload]")),
        (Vsn::V1, _) => return Err(BadFrame("expected an object with topic, event and payload")),
    };
    let (Value::String(topic), Value::String(event)) = (topic, event) else {
        return Err(BadFrame("topic and event must be strings"));
    };
    Ok(Msg { join_ref: opt_ref(&join_ref)?, r#ref: opt_ref(&r)?, topic, event, payload })
}

/// Reads a binary frame: only the client's user broadcast (kind 3).
pub fn decode_binary(b: &[u8]) -> Result<Msg, BadFrame> {
    if b.len() > MAX_FRAME {
        return Err(BadFrame("frame too large"));
    }
    let [3, jr, r, t, e, m, enc, rest @ ..] = b else {
        return Err(BadFrame("unsupported binary frame"));
    };
    let lens = [*jr as usize, *r as usize, *t as usize, *e as usize, *m as usize];
    if rest.len() < lens.iter().sum::<usize>() {
        return Err(BadFrame("truncated binary frame"));
    }
    let mut at = 0;
    let mut field = |n: usize| {
        let s = &rest[at..at + n];
        at += n;
        s
    };
    let text = |s: &[u8]| std::str::from_utf8(s).map(str::to_owned).map_err(|_| BadFrame("binary frame fields must be UTF-8"));
    let join_ref = text(field(lens[0]))?;
    let r = text(field(lens[1]))?;
    let topic = text(field(lens[2]))?;
    let user_event = text(field(lens[3]))?;
    let meta = field(lens[4]);
    let body = &rest[at..];
    let user_payload = match enc {
        1 => {
            let v: Value = serde_json::from_slice(body).map_err(|_| BadFrame("broadcast payload must be JSON"))?;
            if !depth_ok(&v) {
                return Err(BadFrame("payload nested too deeply"));
            }
            v
        }
        // Raw bytes have no JSON form the other clients (and vsn 1.0.0) could read.
        _ => return Err(BadFrame("binary broadcast payloads are not supported; send JSON")),
    };
    let mut payload = json!({"type": "broadcast", "event": user_event, "payload": user_payload});
    if !meta.is_empty() {
        if let Ok(m @ Value::Object(_)) = serde_json::from_slice::<Value>(meta) {
            payload["meta"] = m;
        }
    }
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Msg { join_ref: nonempty(join_ref), r#ref: nonempty(r), topic, event: "broadcast".into(), payload })
}

/// Writes a frame as text in the socket's version.
pub fn encode(vsn: Vsn, m: &Msg) -> String {
    match vsn {
        Vsn::V2 => json!([m.join_ref, m.r#ref, m.topic, m.event, m.payload]).to_string(),
        Vsn::V1 => json!({"join_ref": m.join_ref, "ref": m.r#ref, "topic": m.topic, "event": m.event, "payload": m.payload}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_text_versions_read_and_write() {
        let m = decode_text(Vsn::V2, r#"["6","7","realtime:room1","phx_join",{"config":{}}]"#).unwrap();
        assert_eq!((m.join_ref.as_deref(), m.r#ref.as_deref(), m.topic.as_str(), m.event.as_str()), (Some("6"), Some("7"), "realtime:room1", "phx_join"));
        assert_eq!(encode(Vsn::V2, &Msg::reply(&m, "ok", json!({}))), r#"["6","7","realtime:room1","phx_reply",{"response":{},"status":"ok"}]"#);
        let m1 = decode_text(Vsn::V1, r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3","join_ref":null}"#).unwrap();
        assert_eq!((m1.join_ref, m1.r#ref.as_deref()), (None, Some("3")));
        let out: Value = serde_json::from_str(&encode(Vsn::V1, &Msg::push(None, "t", "e", json!(1)))).unwrap();
        assert_eq!(out, json!({"join_ref": null, "ref": null, "topic": "t", "event": "e", "payload": 1}));
    }

    #[test]
    fn malformed_text_frames_are_refused() {
        for (vsn, f) in [
            (Vsn::V2, "not json"),
            (Vsn::V2, r#"["1","2","t","e"]"#),
            (Vsn::V2, r#"{"topic":"t","event":"e"}"#),
            (Vsn::V1, r#"["1","2","t","e",{}]"#),
            (Vsn::V2, r#"["1","2",3,"e",{}]"#),
            (Vsn::V2, r#"[{},"2","t","e",{}]"#),
        ] {
            assert!(decode_text(vsn, f).is_err(), "{f}");
        }
        let deep = format!("[null,null,\"t\",\"e\",{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(decode_text(Vsn::V2, &deep), Err(BadFrame("payload nested too deeply")));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
    }

    #[test]
    fn the_clients_binary_broadcast_reads_as_a_broadcast_push() {
        // As captured from realtime-js 2.109.0: join_ref "6", ref "7", topic
        // "realtime:room1", event "ev", payload {"hello":"world"}.
        let mut f = vec![3u8, 1, 1, 14, 2, 0, 1];
        f.extend_from_slice(b"67realtime:room1ev{\"hello\":\"world\"}");
        let m = decode_binary(&f).unwrap();
        assert_eq!((m.join_ref.as_deref(), m.r#ref.as_deref(), m.topic.as_str(), m.event.as_str()), (Some("6"), Some("7"), "realtime:room1", "broadcast"));
        assert_eq!(m.payload, json!({"type": "broadcast", "event": "ev", "payload": {"hello": "world"}}));
        // Truncated, other kinds, raw payloads: refused.
        assert!(decode_binary(&f[..12]).is_err());
        assert!(decode_binary(&[2, 1, 1]).is_err());
        let mut raw = f.clone();
        raw[6] = 0;
        assert!(decode_binary(&raw).is_err());
        assert!(decode_binary(&[]).is_err());
    }
}
