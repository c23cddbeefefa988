//! The code catalogue: every machine code the gateway answers with, in one place
//! (as supabase/auth's `apierrors/errorcode.go` and PostgREST's `Error.hs` keep
//! theirs). Handlers name a code from here, never a literal; [`super::Dialect`]
//! renders it in the body shape of the product that was called.
//!
//! - [`pgrst`]: PostgREST's `PGRSTnnn` codes with their HTTP status (REST, webhooks,
//!   the dev tools). SQLSTATEs of database errors travel as they are.
//! - [`auth`]: GoTrue's snake_case `error_code`s (/auth/v1). Their status depends on
//!   the situation, as in GoTrue, so each call site chooses it.
//! - [`generic`]: the codes of the contract's plain shape (every other product, and
//!   errors raised below the products by a layer that knows only a status).

use axum::http::StatusCode;

/// A PostgREST error code and the HTTP status PostgREST answers it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pgrst {
    /// `PGRSTnnn`.
    pub code: &'static str,
    /// The status PostgREST uses for it.
    pub status: StatusCode,
}

const fn p(code: &'static str, status: u16) -> Pgrst {
    let status = match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => panic!("invalid status in the code catalogue"),
    };
    Pgrst { code, status }
}

/// PostgREST's codes (docs: references/errors, "PostgREST Error Codes").
pub mod pgrst {
    use super::{p, Pgrst};

    // Group 0: connection.
    /// The database cannot be reached.
    pub const DB_CONNECTION: Pgrst = p("PGRST000", 503);
    /// No pooled connection within the wait limit (PostgREST answers 504; the contract
    /// answers 503 with Retry-After when the database cannot serve).
    pub const POOL_TIMEOUT: Pgrst = p("PGRST003", 503);

    // Group 1: the request.
    /// The query string (select, filters, order, ...) cannot be parsed.
    pub const QUERY_PARSE: Pgrst = p("PGRST100", 400);
    /// A method other than GET/HEAD/POST on a function.
    pub const RPC_METHOD: Pgrst = p("PGRST101", 405);
    /// An invalid request body.
    pub const INVALID_BODY: Pgrst = p("PGRST102", 400);
    /// An invalid range (Range header, limit/offset).
    pub const INVALID_RANGE: Pgrst = p("PGRST103", 416);
    /// A PUT that does not name exactly the primary key.
    pub const INVALID_PUT: Pgrst = p("PGRST105", 405);
    /// A schema that is not exposed.
    pub const UNACCEPTABLE_SCHEMA: Pgrst = p("PGRST106", 406);
    /// No acceptable media type.
    pub const UNACCEPTABLE_MEDIA: Pgrst = p("PGRST107", 406);
    /// A filter or order on a resource that is not embedded.
    pub const NOT_EMBEDDED: Pgrst = p("PGRST108", 400);
    /// `response.headers` is not a JSON array of objects.
    pub const INVALID_RESPONSE_HEADERS: Pgrst = p("PGRST111", 500);
    /// `response.status` is not a status code.
    pub const INVALID_RESPONSE_STATUS: Pgrst = p("PGRST112", 500);
    /// limit/offset on a PUT.
    pub const PUT_LIMIT: Pgrst = p("PGRST114", 400);
    /// A PUT whose body does not match the key in the URL.
    pub const PUT_KEY_MISMATCH: Pgrst = p("PGRST115", 400);
    /// A single object was asked for and zero or several rows came back.
    pub const SINGULAR: Pgrst = p("PGRST116", 406);
    /// An HTTP method REST does not support.
    pub const UNSUPPORTED_METHOD: Pgrst = p("PGRST117", 405);
    /// Ordering by a related resource that is not to-one.
    pub const RELATED_ORDER: Pgrst = p("PGRST118", 400);
    /// `RAISE SQLSTATE 'PGRST'` with a MESSAGE or DETAIL that is not the JSON it must be.
    pub const RAISE_JSON: Pgrst = p("PGRST121", 500);
    /// An invalid preference with `handling=strict`.
    pub const INVALID_PREFERENCES: Pgrst = p("PGRST122", 400);
    /// An aggregate (`count()`, `col.sum()`, ...) in `select` while aggregates are
    /// off (PostgREST's default, `db-aggregates-enabled = false`).
    pub const AGGREGATES_NOT_ALLOWED: Pgrst = p("PGRST123", 400);
    /// More rows affected than `max-affected` allows.
    pub const MAX_AFFECTED: Pgrst = p("PGRST124", 400);
    /// A path that names no resource.
    pub const INVALID_PATH: Pgrst = p("PGRST125", 404);
    /// `max-affected` under `handling=strict` on a function that returns one value.
    pub const MAX_AFFECTED_SINGLE: Pgrst = p("PGRST128", 400);

    // Group 2: the schema cache.
    /// No relationship between the two resources.
    pub const NO_RELATIONSHIP: Pgrst = p("PGRST200", 400);
    /// More than one relationship: the embed must say which.
    pub const AMBIGUOUS_EMBED: Pgrst = p("PGRST201", 300);
    /// No such function (with these parameters).
    pub const NO_FUNCTION: Pgrst = p("PGRST202", 404);
    /// No such column in the body's target.
    pub const NO_COLUMN: Pgrst = p("PGRST204", 400);
    /// No such table or view.
    pub const NO_RELATION: Pgrst = p("PGRST205", 404);

    // Group 3: JWT.
    /// A JWT that cannot be decoded or verified.
    pub const JWT_INVALID: Pgrst = p("PGRST301", 401);
    /// Anonymous access refused.
    pub const JWT_MISSING: Pgrst = p("PGRST302", 401);
    /// JWT claims that fail validation (expired, not yet valid, wrong audience, ...).
    pub const JWT_CLAIMS: Pgrst = p("PGRST303", 401);

    // SQLSTATEs the gateway answers itself, before or instead of Postgres, with the
    // status PostgREST gives them.
    /// 42501: insufficient privilege (the service key is required).
    pub const INSUFFICIENT_PRIVILEGE: Pgrst = p("42501", 403);
    /// 21000: an UPDATE or DELETE without a filter (PostgREST's pg-safeupdate answer).
    pub const NO_WHERE_CLAUSE: Pgrst = p("21000", 400);
    /// 57014: statement timeout.
    pub const STATEMENT_TIMEOUT: Pgrst = p("57014", 504);
    /// 42703: no such column.
    pub const UNDEFINED_COLUMN: Pgrst = p("42703", 400);
    /// 42P01: no such table (where a body names one).
    pub const UNDEFINED_TABLE: Pgrst = p("42P01", 400);
    /// 42704: no such type (a cast in `select`).
    pub const UNDEFINED_OBJECT: Pgrst = p("42704", 400);
    /// 22P02: a value that is not of its type (an id that is not a UUID).
    pub const INVALID_TEXT: Pgrst = p("22P02", 400);

    // pgstack's own, in PostgREST's numbering style.
    /// The response would exceed RESPONSE_MAX_BYTES.
    pub const RESPONSE_TOO_LARGE: Pgrst = p("PGRST413", 413);
    /// Anything unexpected (PostgREST's PGRSTX00).
    pub const INTERNAL: Pgrst = p("PGRSTX00", 500);
}

/// GoTrue's `error_code`s (supabase/auth `internal/api/apierrors/errorcode.go`).
pub mod auth {
    /// The request body fails validation.
    pub const VALIDATION_FAILED: &str = "validation_failed";
    /// Wrong email or password.
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// An invalid or expired JWT.
    pub const BAD_JWT: &str = "bad_jwt";
    /// No Authorization header where one is required.
    pub const NO_AUTHORIZATION: &str = "no_authorization";
    /// Only the service key may do this.
    pub const NOT_ADMIN: &str = "not_admin";
    /// No such user.
    pub const USER_NOT_FOUND: &str = "user_not_found";
    /// A user with this email exists.
    pub const EMAIL_EXISTS: &str = "email_exists";
    /// A user with these identifiers exists.
    pub const USER_ALREADY_EXISTS: &str = "user_already_exists";
    /// The user is banned.
    pub const USER_BANNED: &str = "user_banned";
    /// The email is not confirmed yet.
    pub const EMAIL_NOT_CONFIRMED: &str = "email_not_confirmed";
    /// The password is too weak.
    pub const WEAK_PASSWORD: &str = "weak_password";
    /// A one-time token or code that is wrong, used or expired.
    pub const OTP_EXPIRED: &str = "otp_expired";
    /// An unknown refresh token.
    pub const REFRESH_TOKEN_NOT_FOUND: &str = "refresh_token_not_found";
    /// A refresh token used again outside the reuse interval.
    pub const REFRESH_TOKEN_ALREADY_USED: &str = "refresh_token_already_used";
    /// The session behind a token is gone.
    pub const SESSION_NOT_FOUND: &str = "session_not_found";
    /// An unknown grant_type.
    pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
    /// No PKCE flow for this code.
    pub const FLOW_STATE_NOT_FOUND: &str = "flow_state_not_found";
    /// The PKCE flow expired.
    pub const FLOW_STATE_EXPIRED: &str = "flow_state_expired";
    /// The PKCE verifier does not match.
    pub const BAD_CODE_VERIFIER: &str = "bad_code_verifier";
    /// The OAuth state parameter is invalid.
    pub const BAD_OAUTH_STATE: &str = "bad_oauth_state";
    /// The OAuth callback is invalid.
    pub const BAD_OAUTH_CALLBACK: &str = "bad_oauth_callback";
    /// The OAuth provider failed.
    pub const OAUTH_PROVIDER_ERROR: &str = "oauth_provider_error";
    /// Anonymous sign-ins are disabled.
    pub const ANONYMOUS_PROVIDER_DISABLED: &str = "anonymous_provider_disabled";
    /// Phone sign-ins are disabled.
    pub const PHONE_PROVIDER_DISABLED: &str = "phone_provider_disabled";
    /// The email could not be sent.
    pub const EMAIL_SEND_FAILED: &str = "email_send_failed";
    /// Too many requests.
    pub const OVER_REQUEST_RATE_LIMIT: &str = "over_request_rate_limit";
    /// Too many emails to one address.
    pub const OVER_EMAIL_SEND_RATE_LIMIT: &str = "over_email_send_rate_limit";
    /// A body over the limit.
    pub const REQUEST_TOO_LARGE: &str = "request_too_large";
    /// No such route or resource.
    pub const NOT_FOUND: &str = "not_found";
    /// The database cannot be reached.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    /// Anything unexpected.
    pub const UNEXPECTED_FAILURE: &str = "unexpected_failure";
}

/// The contract's plain codes, chosen from the status alone (errors raised by a layer
/// that knows no product: extractors, limits, method routing).
pub mod generic {
    use axum::http::StatusCode;
    pub use pgstack_shared::error_code::{BAD_REQUEST, DATABASE_UNAVAILABLE, INTERNAL, NOT_FOUND};

    /// The code for a status.
    pub fn for_status(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => BAD_REQUEST,
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            StatusCode::TOO_MANY_REQUESTS => "over_request_rate_limit",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_header_fields_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
            s if s.is_server_error() => INTERNAL,
            _ => BAD_REQUEST,
        }
    }
}

/// The workbench's codes (/proxy, /poge/api, the database configurations): the Rowsel
/// proxy's `ERR_*` (seed 003; the seed lists a selection, the rest follow its naming).
/// Poge answers with node-postgres' codes and SQLSTATEs, passed through as they come.
pub mod workbench {
    use axum::http::StatusCode;

    /// Database authentication failed (SQLSTATE 28P01 / 28000).
    pub const AUTH_REJECTED: &str = "ERR_AUTH_REJECTED";
    /// Network, host or port connection failed.
    pub const DB_UNREACHABLE: &str = "ERR_DB_UNREACHABLE";
    /// The query endpoint got SQL that is not one read.
    pub const READ_ONLY_QUERY_REQUIRED: &str = "ERR_READ_ONLY_QUERY_REQUIRED";
    /// Syntax, table or column error.
    pub const SQL_INVALID: &str = "ERR_SQL_INVALID";
    /// The statement timeout was reached.
    pub const QUERY_TIMEOUT: &str = "ERR_QUERY_TIMEOUT";
    /// The SSH tunnel failed before it was ready.
    pub const SSH_TUNNEL_FAILED: &str = "ERR_SSH_TUNNEL_FAILED";
    /// The statement was cancelled (`/cancel`).
    pub const CANCELLED: &str = "ERR_QUERY_CANCELLED";
    /// The database refused the user's privilege (SQLSTATE 42501).
    pub const PERMISSION_DENIED: &str = "ERR_PERMISSION_DENIED";
    /// Any other error the database raised (its SQLSTATE travels beside).
    pub const SQL_FAILED: &str = "ERR_SQL_FAILED";
    /// Execute without `confirm: true`.
    pub const CONFIRMATION_REQUIRED: &str = "ERR_CONFIRMATION_REQUIRED";
    /// Execute got several statements, or a transaction statement.
    pub const SINGLE_STATEMENT_REQUIRED: &str = "ERR_SINGLE_STATEMENT_REQUIRED";
    /// A malformed request body or parameter.
    pub const INVALID_REQUEST: &str = "ERR_INVALID_REQUEST";
    /// The target is refused by the address policy.
    pub const TARGET_FORBIDDEN: &str = "ERR_TARGET_FORBIDDEN";
    /// No such session (or not the caller's).
    pub const SESSION_NOT_FOUND: &str = "ERR_SESSION_NOT_FOUND";
    /// The session is busy with another statement.
    pub const SESSION_BUSY: &str = "ERR_SESSION_BUSY";
    /// Transaction action not valid in the session's state.
    pub const TRANSACTION_STATE: &str = "ERR_TRANSACTION_STATE";
    /// Too many pools, sessions or waiting requests.
    pub const CAPACITY: &str = "ERR_CAPACITY";
    /// The answer would exceed the result size limit.
    pub const RESULT_TOO_LARGE: &str = "ERR_RESULT_TOO_LARGE";
    /// No such saved configuration.
    pub const CONFIG_NOT_FOUND: &str = "ERR_CONFIG_NOT_FOUND";
    /// No credential.
    pub const UNAUTHORIZED: &str = "ERR_UNAUTHORIZED";
    /// A credential that does not grant the workbench.
    pub const FORBIDDEN: &str = "ERR_FORBIDDEN";
    /// The workbench is switched off (WORKBENCH_ENABLED).
    pub const DISABLED: &str = "ERR_WORKBENCH_DISABLED";
    /// No such route.
    pub const NOT_FOUND: &str = "ERR_NOT_FOUND";

    /// The code a layer that knows only the status answers with.
    pub fn for_status(status: StatusCode) -> &'static str {
        match status {
            StatusCode::UNAUTHORIZED => UNAUTHORIZED,
            StatusCode::FORBIDDEN => FORBIDDEN,
            StatusCode::NOT_FOUND => NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED => "ERR_METHOD_NOT_ALLOWED",
            StatusCode::PAYLOAD_TOO_LARGE => "ERR_PAYLOAD_TOO_LARGE",
            StatusCode::TOO_MANY_REQUESTS => "ERR_RATE_LIMITED",
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => QUERY_TIMEOUT,
            StatusCode::SERVICE_UNAVAILABLE => CAPACITY,
            s if s.is_server_error() => "ERR_INTERNAL",
            _ => INVALID_REQUEST,
        }
    }

    /// Whether a client may retry the same request as it is.
    pub fn retryable(status: StatusCode) -> bool {
        matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT | StatusCode::BAD_GATEWAY | StatusCode::REQUEST_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::pgrst;

    #[test]
    fn pgrst_statuses_follow_postgrest() {
        for (c, code, status) in [
            (pgrst::QUERY_PARSE, "PGRST100", 400),
            (pgrst::INVALID_RANGE, "PGRST103", 416),
            (pgrst::SINGULAR, "PGRST116", 406),
            (pgrst::AMBIGUOUS_EMBED, "PGRST201", 300),
            (pgrst::NO_FUNCTION, "PGRST202", 404),
            (pgrst::NO_RELATION, "PGRST205", 404),
            (pgrst::JWT_CLAIMS, "PGRST303", 401),
        ] {
            assert_eq!((c.code, c.status.as_u16()), (code, status));
        }
    }
}
