//! Smart chat compaction (`POST /api/chat/compact`, seed 002): keeps what matters of
//! a long chat within a token budget, deterministically (the same input gives the same
//! output; no LLM is involved).
//!
//! Every message gets one of five tiers, by PostgreSQL- and MCP-aware rules:
//! - **anchor**: the first user message, system messages, schema changes (CREATE /
//!   ALTER / DROP …), user corrections ("actually", "no,", "I meant", …), tool schemas;
//! - **important**: errors (ERROR, SQLSTATE, failed), query analysis (EXPLAIN, plans),
//!   tool results (when `preserve_tool_results`), schema information (when
//!   `preserve_schema_info`), insights;
//! - **contextual**: messages that carry SQL or name tables;
//! - **routine**: the rest of the conversation;
//! - **transient**: short acknowledgments ("ok", "thanks", "got it").
//!
//! The last `recent_window` messages are always kept. Before them: anchors (when
//! `keep_anchors`), then important messages (at least `min_important_messages`), then
//! contextual ones while they fit `max_tokens`, newest first; everything else is
//! replaced by one summary message (topics, tables, tools, count) placed where the
//! first dropped message was (when `enable_summarization`).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

/// A message's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Critical context.
    Anchor,
    /// High-value messages.
    Important,
    /// Useful context.
    Contextual,
    /// Standard messages.
    Routine,
    /// Low-value messages.
    Transient,
}

/// The request's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Keep every tool execution result.
    pub preserve_tool_results: bool,
    /// Keep schema-related messages.
    pub preserve_schema_info: bool,
    /// Replace the dropped messages by a summary message.
    pub enable_summarization: bool,
    /// Keep at least this many important messages.
    pub min_important_messages: usize,
    /// Token counting: `generic`, `openai`, `anthropic`, `ollama`.
    pub token_counter_type: String,
    /// A richer summary (actions, entities, errors).
    pub enable_llm_summarization: bool,
    /// Accepted (the result is deterministic; nothing is kept between requests).
    pub enable_caching: bool,
    /// Adds the tier counts to `compaction_info`.
    pub enable_analytics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preserve_tool_results: true,
            preserve_schema_info: true,
            enable_summarization: true,
            min_important_messages: 3,
            token_counter_type: "generic".into(),
            enable_llm_summarization: false,
            enable_caching: false,
            enable_analytics: false,
        }
    }
}

/// The request.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    /// The chat.
    pub messages: Vec<Value>,
    /// Token budget (default 100 000).
    pub max_tokens: Option<usize>,
    /// Recent messages always kept (default 10).
    pub recent_window: Option<usize>,
    /// Keep anchors (default true).
    pub keep_anchors: Option<bool>,
    /// Options.
    #[serde(default)]
    pub options: Options,
}

/// The text of a message: its content, or the text of its content blocks.
fn text_of(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match (b.get("text"), b.get("content")) {
                (Some(Value::String(t)), _) => t.clone(),
                (_, Some(Value::String(t))) => t.clone(),
                (_, Some(c)) => c.to_string(),
                _ => b.get("input").map(Value::to_string).unwrap_or_default(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Tokens of `text` by the named counter (character heuristics per provider family).
pub fn count_tokens(text: &str, counter: &str) -> usize {
    let chars = text.chars().count();
    match counter {
        "openai" => chars.div_ceil(4) + 4,
        "anthropic" => (chars * 10).div_ceil(35) + 3,
        "ollama" => chars.div_ceil(4) + 2,
        _ => chars.div_ceil(4),
    }
}

fn has_any(hay: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| hay.contains(n))
}

fn is_tool_result(m: &Value) -> bool {
    m["role"] == "tool" || m["content"].as_array().is_some_and(|b| b.iter().any(|x| x["type"] == "tool_result"))
}

/// The tier of message `index` of a chat.
pub fn classify(m: &Value, index: usize, first_user: Option<usize>, opts: &Options) -> Tier {
    let role = m["role"].as_str().unwrap_or("");
    let text = text_of(m);
    let lower = text.to_lowercase();
    let trimmed = lower.trim();
    if Some(index) == first_user || role == "system" {
        return Tier::Anchor;
    }
    let ddl = has_any(
        &lower,
        &[
            "create table",
            "alter table",
            "drop table",
            "create index",
            "drop index",
            "create view",
            "create schema",
            "alter column",
            "add column",
            "drop column",
            "create extension",
        ],
    );
    let correction = role == "user"
        && (trimmed.starts_with("no,")
            || trimmed.starts_with("no ")
            || has_any(&lower, &["actually", "i meant", "that's wrong", "that is wrong", "not what i", "correction", "instead of", "wrong table"]));
    let tool_schema = has_any(&lower, &["\"inputschema\"", "input_schema", "tool schema"]);
    if ddl || correction || tool_schema {
        return Tier::Anchor;
    }
    if is_tool_result(m) && opts.preserve_tool_results {
        return Tier::Important;
    }
    let error = has_any(&lower, &["error:", "error ", "sqlstate", "failed", "exception", "permission denied", "does not exist", "syntax error"]);
    let analysis = has_any(&lower, &["explain", "query plan", "seq scan", "index scan", "execution time", "cost="]);
    let schema = opts.preserve_schema_info && has_any(&lower, &["schema", "columns:", "primary key", "foreign key", "get_schema_info", "data type"]);
    let insight = role == "assistant" && has_any(&lower, &["insight", "recommend", "i found", "the result shows", "in summary"]);
    if error || analysis || schema || insight {
        return Tier::Important;
    }
    if trimmed.chars().count() <= 24 && has_any(trimmed, &["ok", "thanks", "thank you", "got it", "sure", "great", "yes", "cool", "nice", "👍"]) {
        return Tier::Transient;
    }
    let sql = has_any(&lower, &["select ", "insert ", "update ", "delete ", " from ", " join "]);
    if sql || !tables_in(&text).is_empty() {
        return Tier::Contextual;
    }
    Tier::Routine
}

/// Table names a text mentions after FROM / JOIN / INTO / UPDATE / TABLE.
fn tables_in(text: &str) -> BTreeSet<String> {
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')').filter(|w| !w.is_empty()).collect();
    let mut out = BTreeSet::new();
    for pair in words.windows(2) {
        if matches!(pair[0].to_ascii_lowercase().as_str(), "from" | "join" | "into" | "update" | "table") {
            let name = pair[1].trim_matches(|c: char| c == '"' || c == '`' || c == '\'').to_ascii_lowercase();
            let ok =
                !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') && !name.starts_with(|c: char| c.is_ascii_digit());
            if ok && !matches!(name.as_str(), "select" | "the" | "a" | "if" | "only" | "lateral") {
                out.insert(name);
            }
        }
    }
    out
}

/// Tools a message used or names.
fn tools_in(m: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(blocks) = m["content"].as_array() {
        for b in blocks {
            if b["type"] == "tool_use" {
                if let Some(n) = b["name"].as_str() {
                    out.insert(n.to_owned());
                }
            }
        }
    }
    if let Some(calls) = m["tool_calls"].as_array() {
        for c in calls {
            if let Some(n) = c.pointer("/function/name").and_then(Value::as_str) {
                out.insert(n.to_owned());
            }
        }
    }
    let text = text_of(m);
    for t in ["query_database", "execute_sql", "explain_query", "get_schema_info"] {
        if text.contains(t) {
            out.insert(t.to_owned());
        }
    }
    out
}

fn topics_in(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    let mut t = Vec::new();
    if has_any(&lower, &["select ", "query", " from "]) {
        t.push("database queries");
    }
    if has_any(&lower, &["create table", "alter table", "schema", "column"]) {
        t.push("schema");
    }
    if has_any(&lower, &["explain", "index", "slow", "performance"]) {
        t.push("performance");
    }
    if has_any(&lower, &["error", "failed", "exception"]) {
        t.push("errors");
    }
    t
}

/// Compacts a chat.
pub fn compact(req: &Request) -> Value {
    let opts = &req.options;
    let max_tokens = req.max_tokens.unwrap_or(100_000).max(1);
    let recent = req.recent_window.unwrap_or(10);
    let keep_anchors = req.keep_anchors.unwrap_or(true);
    let counter = opts.token_counter_type.as_str();
    let msgs = &req.messages;
    let tokens: Vec<usize> = msgs.iter().map(|m| count_tokens(&text_of(m), counter)).collect();
    let original_tokens: usize = tokens.iter().sum();
    let first_user = msgs.iter().position(|m| m["role"] == "user");
    let tiers: Vec<Tier> = msgs.iter().enumerate().map(|(i, m)| classify(m, i, first_user, opts)).collect();
    let n = msgs.len();
    let recent_start = n.saturating_sub(recent);

    let mut keep = vec![false; n];
    let mut used: usize = 0;
    for i in recent_start..n {
        keep[i] = true;
        used += tokens[i];
    }
    if keep_anchors {
        for i in 0..recent_start {
            if tiers[i] == Tier::Anchor {
                keep[i] = true;
                used += tokens[i];
            }
        }
    }
    // Important, then contextual: newest first, while they fit (the first
    // min_important_messages important ones regardless).
    let mut important_kept = 0;
    for tier in [Tier::Important, Tier::Contextual] {
        for i in (0..recent_start).rev() {
            if keep[i] || tiers[i] != tier {
                continue;
            }
            let must = tier == Tier::Important && important_kept < opts.min_important_messages;
            if must || used + tokens[i] <= max_tokens {
                keep[i] = true;
                used += tokens[i];
                if tier == Tier::Important {
                    important_kept += 1;
                }
            }
        }
    }
    // Nothing over budget and nothing to drop: unchanged.
    let dropped: Vec<usize> = (0..n).filter(|&i| !keep[i]).collect();
    let (mut topics, mut tables, mut tools) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut errors = 0;
    for &i in &dropped {
        let text = text_of(&msgs[i]);
        topics.extend(topics_in(&text));
        tables.extend(tables_in(&text));
        tools.extend(tools_in(&msgs[i]));
        if text.to_lowercase().contains("error") {
            errors += 1;
        }
    }
    let mut parts = Vec::new();
    if !topics.is_empty() {
        parts.push(format!("Topics: {}", topics.iter().copied().collect::<Vec<_>>().join(", ")));
    }
    if !tables.is_empty() {
        parts.push(format!("Tables: {}", tables.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !tools.is_empty() {
        parts.push(format!("Tools used: {}", tools.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if opts.enable_llm_summarization && errors > 0 {
        parts.push(format!("Errors: {errors}"));
    }
    parts.push(format!("{} messages compressed", dropped.len()));
    let description = format!("[Compressed context: {}]", parts.join(", "));

    let mut out: Vec<Value> = Vec::new();
    let mut summary_placed = false;
    for i in 0..n {
        if keep[i] {
            out.push(msgs[i].clone());
        } else if !summary_placed && opts.enable_summarization {
            out.push(json!({ "role": "assistant", "content": description }));
            summary_placed = true;
        }
    }
    let token_estimate: usize = out.iter().map(|m| count_tokens(&text_of(m), counter)).sum();
    let mut info = json!({
        "original_count": n,
        "compacted_count": out.len(),
        "dropped_count": dropped.len(),
        "anchor_count": tiers.iter().zip(&keep).filter(|(t, k)| **t == Tier::Anchor && **k).count(),
        "tokens_saved": original_tokens.saturating_sub(token_estimate),
        "compression_ratio": if original_tokens == 0 { 1.0 } else { ((token_estimate as f64 / original_tokens as f64) * 1000.0).round() / 1000.0 },
    });
    if opts.enable_analytics {
        let count = |t: Tier| tiers.iter().filter(|x| **x == t).count();
        info["tiers"] = json!({ "anchor": count(Tier::Anchor), "important": count(Tier::Important), "contextual": count(Tier::Contextual), "routine": count(Tier::Routine), "transient": count(Tier::Transient) });
        info["original_tokens"] = json!(original_tokens);
    }
    json!({
        "messages": out,
        "summary": {
            "topics": topics.into_iter().collect::<Vec<_>>(),
            "tables": tables.into_iter().collect::<Vec<_>>(),
            "tools": tools.into_iter().collect::<Vec<_>>(),
            "description": description,
        },
        "token_estimate": token_estimate,
        "compaction_info": info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> Value {
        json!({ "role": role, "content": content })
    }

    fn tier(msg: Value, index: usize) -> Tier {
        classify(&msg, index, Some(0), &Options::default())
    }

    #[test]
    fn tiers_by_rule() {
        assert_eq!(tier(m("user", "Show me the users table"), 0), Tier::Anchor, "the first user message");
        assert_eq!(tier(m("system", "You are a DBA"), 3), Tier::Anchor);
        assert_eq!(tier(m("assistant", "I ran ALTER TABLE users ADD COLUMN age int"), 3), Tier::Anchor, "a schema change");
        assert_eq!(tier(m("user", "No, I meant the orders table"), 3), Tier::Anchor, "a correction");
        assert_eq!(tier(m("assistant", "ERROR: relation \"x\" does not exist (SQLSTATE 42P01)"), 3), Tier::Important);
        assert_eq!(tier(m("assistant", "EXPLAIN shows a Seq Scan on orders"), 3), Tier::Important);
        assert_eq!(tier(json!({"role": "tool", "content": "[{\"n\": 3}]"}), 3), Tier::Important, "a tool result");
        assert_eq!(tier(json!({"role": "user", "content": [{"type": "tool_result", "content": "rows"}]}), 3), Tier::Important);
        assert_eq!(tier(m("assistant", "The users table has columns: id, email"), 3), Tier::Important, "schema info");
        assert_eq!(tier(m("assistant", "SELECT count(*) FROM orders WHERE total > 10"), 3), Tier::Contextual);
        assert_eq!(tier(m("user", "what about last week"), 3), Tier::Routine);
        assert_eq!(tier(m("user", "ok thanks"), 3), Tier::Transient);
        let no_tools = Options { preserve_tool_results: false, ..Options::default() };
        assert_eq!(classify(&json!({"role": "tool", "content": "done"}), 3, Some(0), &no_tools), Tier::Routine);
    }

    #[test]
    fn token_counters_differ_and_grow() {
        let t = "x".repeat(350);
        assert_eq!(count_tokens(&t, "generic"), 88);
        assert_eq!(count_tokens(&t, "openai"), 92);
        assert_eq!(count_tokens(&t, "anthropic"), 103);
        assert_eq!(count_tokens(&t, "ollama"), 90);
        assert_eq!(count_tokens("", "generic"), 0);
    }

    fn chat(n: usize) -> Vec<Value> {
        let mut v = vec![m("user", "Show me the users table")];
        for i in 1..n {
            v.push(match i % 5 {
                0 => m("user", "ok"),
                1 => m("assistant", &format!("Here is what I found about item {i}: nothing special, just chatting along for a while.")),
                2 => m("user", "and then what happened next in the story"),
                3 => m("assistant", &format!("SELECT * FROM orders WHERE id = {i}")),
                _ => m("assistant", "ERROR: permission denied for table secrets"),
            });
        }
        v
    }

    #[test]
    fn keeps_recent_anchors_and_important_and_summarizes_the_rest() {
        let req = Request { messages: chat(40), max_tokens: Some(200), recent_window: Some(5), keep_anchors: Some(true), options: Options::default() };
        let out = compact(&req);
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs[0], m("user", "Show me the users table"), "the anchor stays first");
        assert!(msgs[1]["content"].as_str().unwrap().starts_with("[Compressed context:"), "{}", msgs[1]);
        assert_eq!(&msgs[msgs.len() - 5..], &req.messages[35..], "the recent window is intact");
        let info = &out["compaction_info"];
        assert_eq!(info["original_count"], 40);
        assert_eq!(info["compacted_count"].as_u64().unwrap() as usize, msgs.len());
        assert_eq!(info["dropped_count"].as_u64().unwrap() as usize + msgs.len() - 1, 40);
        assert!(info["tokens_saved"].as_u64().unwrap() > 0);
        assert!(out["summary"]["tables"].as_array().unwrap().contains(&json!("orders")));
        // Errors are important: at least min_important_messages of them kept.
        let errors = msgs.iter().filter(|x| x["content"].as_str().is_some_and(|c| c.starts_with("ERROR"))).count();
        assert!(errors >= 3, "{errors}");
        assert_eq!(compact(&req), out, "deterministic");
    }

    #[test]
    fn within_budget_nothing_is_dropped() {
        let req = Request { messages: chat(8), max_tokens: Some(100_000), recent_window: Some(10), keep_anchors: None, options: Options::default() };
        let out = compact(&req);
        assert_eq!(out["messages"].as_array().unwrap().len(), 8);
        assert_eq!(out["compaction_info"]["dropped_count"], 0);
        assert_eq!(out["compaction_info"]["compression_ratio"], 1.0);
    }

    #[test]
    fn options_change_the_outcome() {
        let base = Request { messages: chat(30), max_tokens: Some(50), recent_window: Some(2), keep_anchors: Some(false), options: Options::default() };
        let out = compact(&base);
        assert!(!out["messages"].as_array().unwrap().contains(&m("user", "Show me the users table")), "keep_anchors false drops the anchor");
        let quiet = Request { options: Options { enable_summarization: false, min_important_messages: 0, enable_analytics: true, ..Options::default() }, ..base.clone() };
        let out = compact(&quiet);
        assert!(out["messages"].as_array().unwrap().iter().all(|x| !x["content"].as_str().unwrap_or("").starts_with("[Compressed")));
        assert_eq!(out["compaction_info"]["tiers"]["anchor"], 1);
        let anthropic = Request { options: Options { token_counter_type: "anthropic".into(), ..Options::default() }, ..base.clone() };
        assert!(compact(&anthropic)["token_estimate"].as_u64() > compact(&base)["token_estimate"].as_u64());
    }
}
