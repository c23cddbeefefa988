//! The pgstack gateway: HTTP and WebSocket in front of PostgreSQL.
//!
//! Flow: `main.rs` (CLI) → [`config`] → [`serve`] builds [`state::AppState`] and
//! [`router::app`] → handlers per product. The embedded cluster of `pgstack dev`
//! lives in [`dev`]; creating/updating the extension in [`install`].
#![forbid(unsafe_code)]
// A failing request builds one error value (PostgREST's four fields, headers, a cause):
// boxing it would save a copy on the error path only.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod auth;
pub mod channels;
pub mod config;
pub mod db;
pub mod dev;
pub mod devtools;
pub mod error;
pub mod functions;
pub mod health;
pub mod http;
pub mod install;
pub mod keys;
pub mod listener;
pub mod realtime;
pub mod rest;
pub mod router;
pub mod serve;
pub mod ssrf;
pub mod state;
pub mod storage;
pub mod webhooks;
pub mod workbench;

pub use router::app;
pub use state::AppState;
