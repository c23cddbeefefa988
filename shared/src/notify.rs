//! Payloads the extension sends with `pg_notify` and the gateway relays.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Channel that carries live-query deltas.
pub const LIVE_QUERY_CHANNEL: &str = "pgr";

/// Largest NOTIFY payload the extension emits on `channel`: 8000 − channel length − 100.
pub const fn max_payload(channel: &str) -> usize {
    8000 - channel.len() - 100
}

/// One message on the live-query channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LiveQueryMessage {
    /// The result changed; `type` says how the client must react.
    Signal {
        /// "overflow" or "invalidated".
        #[serde(rename = "type")]
        kind: SignalKind,
        /// The subscription.
        query_id: String,
        /// Per-subscription sequence number.
        seq: i64,
        /// True when the client must re-fetch (overflow).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fetch: bool,
    },
    /// Rows that entered and left the result.
    Delta {
        /// The subscription.
        query_id: String,
        /// Per-subscription sequence number.
        seq: i64,
        /// Rows added to the result.
        inserted: Vec<Value>,
        /// Rows removed from the result.
        deleted: Vec<Value>,
    },
}

/// What the gateway reads of every live-query message to route it: the subscription
/// and its sequence number (the rest is relayed to the sockets as it is, unparsed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveQueryHead<'a> {
    /// The subscription.
    #[serde(borrow)]
    pub query_id: std::borrow::Cow<'a, str>,
    /// Per-subscription sequence number.
    #[serde(default)]
    pub seq: Option<i64>,
}

/// The kinds of signal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The delta did not fit in a NOTIFY payload.
    Overflow,
    /// A `mode = 'notify'` subscription's result changed.
    Invalidated,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_deltas_and_signals_routes_them() {
        let delta = r#"{"query_id":"q1","seq":7,"inserted":[{"id":1}],"deleted":[]}"#;
        let head: LiveQueryHead = serde_json::from_str(delta).unwrap();
        assert_eq!((head.query_id.as_ref(), head.seq), ("q1", Some(7)));
        let signal = r#"{"type":"overflow","query_id":"q\"2","seq":3,"fetch":true}"#;
        let head: LiveQueryHead = serde_json::from_str(signal).unwrap();
        assert_eq!((head.query_id.as_ref(), head.seq), ("q\"2", Some(3)));
        assert!(serde_json::from_str::<LiveQueryHead>(r#"{"seq":1}"#).is_err());
    }

    #[test]
    fn payload_limit_matches_the_contract() {
        assert_eq!(max_payload(LIVE_QUERY_CHANNEL), 7897);
    }

    #[test]
    fn parses_the_contract_messages() {
        let d: LiveQueryMessage = serde_json::from_str(r#"{"query_id":"q","seq":7,"inserted":[{"id":1}],"deleted":[]}"#).unwrap();
        assert!(matches!(d, LiveQueryMessage::Delta { seq: 7, .. }));
        let o: LiveQueryMessage = serde_json::from_str(r#"{"type":"overflow","query_id":"q","seq":8,"fetch":true}"#).unwrap();
        assert_eq!(o, LiveQueryMessage::Signal { kind: SignalKind::Overflow, query_id: "q".into(), seq: 8, fetch: true });
        let back = serde_json::to_value(&o).unwrap();
        assert_eq!(back["type"], "overflow");
    }
}
