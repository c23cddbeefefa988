//! One REST request, parsed once (PostgREST's `ApiRequest`): the action, the target,
//! the schema, the query string, the preferences, the media type, the payload and the
//! request facts handed to Postgres. Built before any database work; the handlers
//! in `rest/routes.rs` read it and never the raw request again.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::Value;

use super::args::CallBody;
use super::rows::Rows;
use super::{parse_query, QueryParams};
use crate::error::code::pgrst;
use crate::error::postgrest::RestError;
use crate::rest::prefer::{self, Accept, Prefer};

/// What the request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET (`body: true`) or HEAD on a relation.
    Read {
        /// GET sends the rows; HEAD only the headers.
        body: bool,
    },
    /// POST on a relation: insert or upsert.
    Create,
    /// PATCH on a relation.
    Update,
    /// DELETE on a relation.
    Delete,
    /// PUT on a relation: upsert of one row by its primary key.
    Put,
    /// OPTIONS: the methods the resource takes.
    Info,
    /// GET / HEAD / POST on a function; `read_only` for GET and HEAD.
    Call {
        /// GET and HEAD run READ ONLY.
        read_only: bool,
        /// HEAD sends no body.
        body: bool,
    },
}

/// What the request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A table or view.
    Relation,
    /// A function (`/rpc/{name}`).
    Function,
}

/// A parsed REST request.
#[derive(Debug)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// What it does.
    pub action: Action,
    /// The relation or function name.
    pub name: String,
    /// The exposed schema it runs in (Accept-Profile / Content-Profile).
    pub schema: String,
    /// The path below /rest/v1 (`request.path`).
    pub path: String,
    /// The raw query string (for Content-Location).
    pub raw_query: Option<String>,
    /// The query string, parsed (bounded in size and depth).
    pub query: QueryParams,
    /// `Prefer`.
    pub prefer: Prefer,
    /// The response's media type (for a plan: the one it is planned for).
    pub accept: Accept,
    /// `Accept: application/vnd.pgrst.plan...`: answer the statement's EXPLAIN.
    pub plan: Option<prefer::Plan>,
    /// A call's Accept names no media type pgstack renders: PGRST107's message,
    /// unless the function answers one of its own.
    pub unacceptable: Option<String>,
    /// A POST call's body (JSON, or a form); `None` for other actions.
    pub call: Option<CallBody>,
    /// The rows of an insert, update or PUT (JSON, CSV or a form).
    pub rows: Option<super::rows::Rows>,
    /// An `application/x-www-form-urlencoded` body's pairs, repeats kept (an RPC's
    /// VARIADIC argument takes them all).
    pub form: Option<Vec<(String, String)>>,
    /// Lower-cased request headers except Cookie, as a JSON object (`request.headers`).
    pub headers_json: String,
    /// The cookies, as a JSON object (`request.cookies`).
    pub cookies_json: String,
    /// A `Warning` for the answer (a deprecated form that was still honoured).
    pub warning: Option<String>,
}

impl ApiRequest {
    /// Parses a request on `target` `name`. `exposed` are the exposed schemas.
    /// `prefer.rollback` is left false: the route decides it from DB_TX_END.
    pub fn parse(method: Method, target: Target, name: &str, headers: &HeaderMap, raw_query: Option<String>, body: &Bytes, exposed: &[String]) -> Result<ApiRequest, RestError> {
        let schema = prefer::schema(headers, &method, exposed)?.to_owned();
        let action = action(&method, target)?;
        let rpc_args = matches!(action, Action::Call { read_only: true, .. });
        let mut query = parse_query(raw_query.as_deref().unwrap_or(""), rpc_args)?;
        let warning = super::legacy_targets(&mut query);
        // The Range header is read on GET only (RFC 9110; PostgREST ignores it on
        // HEAD and POST).
        if method == Method::GET && matches!(action, Action::Read { .. } | Action::Call { .. }) {
            prefer::apply_range(headers, &mut query.offset, &mut query.limit)?;
        }
        let (prefer, accepted) = match action {
            Action::Info => (Prefer::default(), Ok((Accept::Json, None))),
            _ => (prefer::prefer_checked(headers)?, prefer::accept(headers)),
        };
        // A function may answer a media type of its own (its return type's domain):
        // the route decides once it knows the function.
        let (accept, plan, unacceptable) = match (accepted, action) {
            (Ok((a, p)), _) => (a, p, None),
            (Err(e), Action::Call { .. }) => (Accept::Json, None, Some(e.message)),
            (Err(e), _) => return Err(e),
        };
        let form = if matches!(action, Action::Create | Action::Update | Action::Put | Action::Call { read_only: false, .. }) { form_pairs(headers, body)? } else { None };
        let (call, rows) = match (action, &form) {
            // A form is an object of strings (the last of a repeated name).
            (Action::Create | Action::Update | Action::Put, Some(pairs)) => {
                (None, Some(Rows::from_value(&Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()))?))
            }
            (Action::Create | Action::Update | Action::Put, None) => (None, Some(rows(headers, body)?)),
            (Action::Call { read_only: false, .. }, Some(pairs)) => (Some(CallBody::from_form(pairs)), None),
            (Action::Call { read_only: false, .. }, None) => match raw_type(headers) {
                Some(ty) => (Some(CallBody::from_raw(ty, body)?), None),
                None => (Some(CallBody::from_json(body)?), None),
            },
            _ => (None, None),
        };
        let path = match target {
            Target::Relation => format!("/{name}"),
            Target::Function => format!("/rpc/{name}"),
        };
        let (headers_json, cookies_json) = crate::db::caller::request_settings(headers);
        Ok(ApiRequest {
            method,
            action,
            name: name.to_owned(),
            schema,
            path,
            raw_query,
            query,
            prefer,
            accept,
            plan,
            unacceptable,
            call,
            rows,
            form,
            headers_json,
            cookies_json,
            warning,
        })
    }

    /// The request facts for Postgres (`request.*`), with the caller-independent
    /// transaction settings; the handler adds the role's statement timeout.
    pub fn info(&self) -> crate::db::RequestInfo<'_> {
        let read_only = matches!(self.action, Action::Read { .. } | Action::Call { read_only: true, .. });
        let strict_limit = self.prefer.strict && matches!(self.action, Action::Update | Action::Delete | Action::Call { .. });
        crate::db::RequestInfo {
            method: self.method.as_str(),
            path: &self.path,
            headers: self.headers_json.clone(),
            cookies: self.cookies_json.clone(),
            // Reads never write, whatever functions they call (PostgREST: READ ONLY).
            read_only,
            // Functions and the triggers of writes may set response.headers / .status.
            response_gucs: !matches!(self.action, Action::Read { .. } | Action::Info),
            timezone: self.prefer.timezone.clone(),
            statement_timeout: None,
            max_affected: if strict_limit { self.prefer.max_affected } else { None },
            // (A write with a representation checks its one row in its own statement:
            // plan::write; without one, and for calls, the transaction is checked.)
            singular: matches!(self.accept, Accept::Object | Accept::ObjectStripped)
                && match self.action {
                    Action::Create | Action::Update | Action::Delete | Action::Put => self.prefer.ret != prefer::Return::Representation,
                    Action::Call { read_only: false, .. } => true,
                    _ => false,
                },
            put_one: matches!(self.action, Action::Put),
        }
    }
}

fn action(method: &Method, target: Target) -> Result<Action, RestError> {
    Ok(match (target, method) {
        (_, &Method::OPTIONS) => Action::Info,
        (Target::Relation, &Method::GET) => Action::Read { body: true },
        (Target::Relation, &Method::HEAD) => Action::Read { body: false },
        (Target::Relation, &Method::POST) => Action::Create,
        (Target::Relation, &Method::PATCH) => Action::Update,
        (Target::Relation, &Method::DELETE) => Action::Delete,
        (Target::Relation, &Method::PUT) => Action::Put,
        (Target::Relation, m) => return Err(RestError::of(pgrst::UNSUPPORTED_METHOD, format!("Unsupported HTTP method: {m}"))),
        (Target::Function, &Method::GET) => Action::Call { read_only: true, body: true },
        (Target::Function, &Method::HEAD) => Action::Call { read_only: true, body: false },
        (Target::Function, &Method::POST) => Action::Call { read_only: false, body: true },
        (Target::Function, m) => return Err(RestError::of(pgrst::RPC_METHOD, format!("Cannot use the {m} method on RPC"))),
    })
}

/// The pairs of an `application/x-www-form-urlencoded` body (PostgREST takes form
/// posts for inserts, updates and calls).
/// At most [`MAX_FORM_FIELDS`] pairs (2 MB of `a&a&…` were a million pairs,
/// each kept twice).
fn form_pairs(headers: &HeaderMap, body: &Bytes) -> Result<Option<Vec<(String, String)>>, RestError> {
    let form = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok(None);
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body).take(MAX_FORM_FIELDS + 1).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.len() > MAX_FORM_FIELDS {
        return Err(RestError::of(pgrst::INVALID_BODY, format!("a form body may hold at most {MAX_FORM_FIELDS} fields")));
    }
    Ok(Some(pairs))
}

/// A call's body that is not JSON (PostgREST's single unnamed parameter): the
/// parameter type its Content-Type feeds.
fn raw_type(headers: &HeaderMap) -> Option<&'static str> {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok())?;
    match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/octet-stream" => Some("bytea"),
        "text/plain" => Some("text"),
        "text/xml" => Some("xml"),
        _ => None,
    }
}

/// Most fields of a form body (a row has at most 1600 columns; the rest leaves room
/// for a VARIADIC argument's repeated values).
pub const MAX_FORM_FIELDS: usize = 10_000;

/// A write's rows: JSON, or CSV with `Content-Type: text/csv`. An empty body is
/// not a payload (PostgREST: PGRST102; only a function call takes it as `{}`).
fn rows(headers: &HeaderMap, body: &Bytes) -> Result<Rows, RestError> {
    let csv = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().starts_with("text/csv"));
    if csv {
        let (json, held) = crate::rest::format::csv_rows(body)?;
        let mut rows = Rows::from_json_string(json)?;
        rows.held = held.map(std::sync::Arc::new);
        Ok(rows)
    } else {
        Rows::from_json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_actions() {
        assert_eq!(action(&Method::HEAD, Target::Relation).unwrap(), Action::Read { body: false });
        assert_eq!(action(&Method::PUT, Target::Function).unwrap_err().code, "PGRST101");
        assert_eq!(action(&Method::TRACE, Target::Relation).unwrap_err().code, "PGRST117");
        assert_eq!(action(&Method::OPTIONS, Target::Function).unwrap(), Action::Info);
    }
}
