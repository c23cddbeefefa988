//! Functions in schema `pgr`: runtime helpers and the live-query checks that need
//! Postgres's own parser.

use pgrx::prelude::*;

#[pg_schema]
mod pgr {
    use pgrx::pg_sys;
    use pgrx::prelude::*;
    use std::ffi::CString;

    /// The version of the installed extension build. The gateway compares it with
    /// its own to warn when `ALTER EXTENSION pgstack UPDATE` is due.
    #[pg_extern(immutable, parallel_safe)]
    fn version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// `pgstack.webhook_max_attempts` (see `api::settings`). Calling it loads the
    /// library, so the setting is defined — and checked — in this session.
    #[pg_extern(stable, parallel_safe)]
    fn webhook_max_attempts() -> i32 {
        crate::api::settings::WEBHOOK_MAX_ATTEMPTS.get()
    }

    /// `pgstack.webhook_max_payload_bytes` (see `api::settings`).
    #[pg_extern(stable, parallel_safe)]
    fn webhook_max_payload_bytes() -> i32 {
        crate::api::settings::WEBHOOK_MAX_PAYLOAD_BYTES.get()
    }

    /// Sets `name` to `value` for the rest of the transaction, exactly as
    /// `set_config(name, value, true)` does (same context, source and checks: a role
    /// must be one the session user is a member of), without reading the value back.
    fn set_local(name: &std::ffi::CStr, value: &str) {
        let Ok(value) = CString::new(value) else {
            ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid value for parameter {name:?}: a NUL byte"));
        };
        // SAFETY: both strings are NUL-terminated and outlive the call; errors (an
        // unknown role, a bad time zone) are raised as ERROR through pgrx's guard.
        unsafe {
            let context = if pg_sys::superuser() { pg_sys::GucContext::PGC_SUSET } else { pg_sys::GucContext::PGC_USERSET };
            pg_sys::set_config_option(name.as_ptr(), value.as_ptr(), context, pg_sys::GucSource::PGC_S_SESSION, pg_sys::GucAction::GUC_ACTION_LOCAL, true, 0, false);
        }
    }

    /// Sets up a transaction as a request's caller: the role, the claims and the
    /// request settings transaction-locally, in the order and with the checks of the
    /// gateway's `set_config` statement, in one call that returns nothing (Postgres
    /// compiles and runs one function call, not nine, and sends no values back).
    /// `read_only` turns the transaction read-only; a NULL time zone or statement
    /// timeout leaves that setting as it is.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_setup(role: &str, claims: &str, method: &str, path: &str, headers: &str, cookies: &str, read_only: bool, timezone: Option<&str>, statement_timeout: Option<&str>) {
        set_local(c"role", role);
        set_local(c"request.jwt.claims", claims);
        set_local(c"request.method", method);
        set_local(c"request.path", path);
        set_local(c"request.headers", headers);
        set_local(c"request.cookies", cookies);
        if read_only {
            set_local(c"transaction_read_only", "on");
        }
        if let Some(tz) = timezone {
            set_local(c"timezone", tz);
        }
        if let Some(t) = statement_timeout {
            set_local(c"statement_timeout", t);
        }
    }

    fn refuse(msg: &str) -> ! {
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid live query: {msg}"), "a live query must be exactly one read-only SELECT");
    }

    /// # Safety
    /// `list` is a valid List of pointers, or null.
    unsafe fn nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
        if list.is_null() {
            return Vec::new();
        }
        let len = (*list).length as usize;
        (0..len).map(|i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node).collect()
    }

    /// # Safety
    /// `node` is a valid parse-tree node.
    unsafe fn check_select(node: *mut pg_sys::Node) {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_SelectStmt {
            refuse("only SELECT is allowed (no INSERT, UPDATE, DELETE, MERGE or utility statements)");
        }
        let s = node as *mut pg_sys::SelectStmt;
        if !(*s).intoClause.is_null() {
            refuse("SELECT INTO is not allowed");
        }
        if !(*s).lockingClause.is_null() {
            refuse("FOR UPDATE / FOR SHARE is not allowed");
        }
        if !(*s).withClause.is_null() {
            for cte in nodes((*(*s).withClause).ctes) {
                let cte = cte as *mut pg_sys::CommonTableExpr;
                if (*(*cte).ctequery).type_ != pg_sys::NodeTag::T_SelectStmt {
                    refuse("data-modifying statements in WITH are not allowed");
                }
                check_select((*cte).ctequery);
            }
        }
        if !(*s).larg.is_null() {
            check_select((*s).larg as *mut pg_sys::Node);
        }
        if !(*s).rarg.is_null() {
            check_select((*s).rarg as *mut pg_sys::Node);
        }
    }

    /// Raises an error unless `query` is exactly one read-only SELECT: no other
    /// statement, no data-modifying CTE, no SELECT INTO, no FOR UPDATE / SHARE.
    /// Uses Postgres's own raw parser, so what is checked is what will run.
    #[pg_extern(immutable, parallel_safe)]
    fn check_live_query(query: &str) {
        let c = match CString::new(query) {
            Ok(c) => c,
            Err(_) => refuse("the query contains a NUL byte"),
        };
        // SAFETY: raw_parser reads a NUL-terminated string and returns a List of
        // RawStmt allocated in the current memory context (errors are raised as ERROR).
        unsafe {
            let stmts = nodes(pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
            if stmts.len() != 1 {
                refuse(&format!("expected one statement, found {}", stmts.len()));
            }
            let raw = stmts[0] as *mut pg_sys::RawStmt;
            check_select((*raw).stmt);
        }
    }

    /// The name of a String node (PG15: `sval`).
    ///
    /// # Safety
    /// `node` is a valid T_String node.
    unsafe fn string_of(node: *mut pg_sys::Node) -> String {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_String {
            return String::new();
        }
        let sval = (*(node as *mut pg_sys::String)).sval;
        if sval.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(sval).to_string_lossy().into_owned()
    }

    /// What in a raw parse tree reads who the viewer is: `auth.uid()`, `auth.jwt()`,
    /// `auth.role()`, `auth.email()`, `current_setting(…)` (request.jwt.claims and the
    /// like), CURRENT_USER / CURRENT_ROLE / SESSION_USER / USER. The first one found
    /// is written to `*context` (a `*mut Option<String>`) and stops the walk.
    ///
    /// # Safety
    /// `node` is a valid raw parse-tree node or null; `context` points to an
    /// `Option<String>`.
    #[pg_guard]
    unsafe extern "C-unwind" fn viewer_walker(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        use pg_sys::NodeTag::*;
        if node.is_null() {
            return false;
        }
        let found = context as *mut Option<String>;
        match (*node).type_ {
            T_FuncCall => {
                let names: Vec<String> = nodes((*(node as *mut pg_sys::FuncCall)).funcname).into_iter().map(|n| string_of(n)).collect();
                let hit = match names.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                    ["auth", f @ ("uid" | "jwt" | "role" | "email")] => Some(format!("auth.{f}()")),
                    ["current_setting"] | ["pg_catalog", "current_setting"] => Some("current_setting()".to_owned()),
                    _ => None,
                };
                if hit.is_some() {
                    *found = hit;
                    return true;
                }
            }
            T_SQLValueFunction => {
                let op = (*(node as *mut pg_sys::SQLValueFunction)).op;
                let name = match op {
                    pg_sys::SQLValueFunctionOp::SVFOP_CURRENT_USER => Some("CURRENT_USER"),
                    pg_sys::SQLValueFunctionOp::SVFOP_CURRENT_ROLE => Some("CURRENT_ROLE"),
                    pg_sys::SQLValueFunctionOp::SVFOP_SESSION_USER => Some("SESSION_USER"),
                    pg_sys::SQLValueFunctionOp::SVFOP_USER => Some("USER"),
                    _ => None,
                };
                if let Some(n) = name {
                    *found = Some(n.to_owned());
                    return true;
                }
            }
            _ => {}
        }
        pg_sys::raw_expression_tree_walker(node, Some(viewer_walker), context)
    }

    /// The first thing in `query` whose value depends on who runs it (see
    /// [`viewer_walker`]), or NULL. A live query's result is shared by every
    /// subscriber, so such a query is refused. Found in Postgres's own parse tree:
    /// names inside string literals or comments do not count, and spacing or quoting
    /// (`"auth" . "uid" ()`) cannot hide a call.
    #[pg_extern(immutable, parallel_safe)]
    fn live_query_viewer_dependency(query: &str) -> Option<String> {
        let c = CString::new(query).ok()?;
        let mut found: Option<String> = None;
        // SAFETY: as in check_live_query; the walker reads node tags and names only.
        unsafe {
            for raw in nodes(pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT)) {
                let stmt = (*(raw as *mut pg_sys::RawStmt)).stmt;
                if viewer_walker(stmt, &mut found as *mut Option<String> as *mut std::ffi::c_void) {
                    break;
                }
            }
        }
        found
    }

    /// # Safety
    /// `node` is a valid raw expression node or null.
    unsafe fn row_local(node: *mut pg_sys::Node) -> bool {
        use pg_sys::NodeTag::*;
        if node.is_null() {
            return true;
        }
        match (*node).type_ {
            T_ColumnRef | T_A_Const | T_ParamRef => true,
            T_A_Expr => {
                let e = node as *mut pg_sys::A_Expr;
                row_local((*e).lexpr) && row_local((*e).rexpr)
            }
            T_BoolExpr => nodes((*(node as *mut pg_sys::BoolExpr)).args).into_iter().all(|n| row_local(n)),
            T_NullTest => row_local((*(node as *mut pg_sys::NullTest)).arg as *mut pg_sys::Node),
            T_BooleanTest => row_local((*(node as *mut pg_sys::BooleanTest)).arg as *mut pg_sys::Node),
            T_TypeCast => row_local((*(node as *mut pg_sys::TypeCast)).arg),
            T_List => nodes(node as *mut pg_sys::List).into_iter().all(|n| row_local(n)),
            T_FuncCall => {
                let f = node as *mut pg_sys::FuncCall;
                (*f).over.is_null()
                    && !(*f).agg_star
                    && !(*f).agg_distinct
                    && (*f).agg_filter.is_null()
                    && (*f).agg_order.is_null()
                    && nodes((*f).args).into_iter().all(|n| row_local(n))
            }
            // Sub-selects (rows of other tables or of other rows), and anything this
            // walker does not know, are not row-local.
            _ => false,
        }
    }

    /// `"row"` when `query` is a single-table filter — `SELECT columns FROM table
    /// WHERE <row-local predicate>`, no joins, sub-selects, aggregates, DISTINCT,
    /// GROUP BY, LIMIT, set operations or column aliases — so each result row depends
    /// only on its own table row and a write's delta can be computed from the rows it
    /// touched. `"general"` otherwise (the result is recomputed).
    #[pg_extern(immutable, parallel_safe)]
    fn live_query_shape(query: &str) -> &'static str {
        let Ok(c) = CString::new(query) else { return "general" };
        // SAFETY: as in check_live_query; only node tags and fields of the raw tree are read.
        unsafe {
            let stmts = nodes(pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
            if stmts.len() != 1 {
                return "general";
            }
            let node = (*(stmts[0] as *mut pg_sys::RawStmt)).stmt;
            if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_SelectStmt {
                return "general";
            }
            let s = node as *mut pg_sys::SelectStmt;
            let simple = (*s).op == pg_sys::SetOperation::SETOP_NONE
                && (*s).withClause.is_null()
                && (*s).distinctClause.is_null()
                && (*s).groupClause.is_null()
                && (*s).havingClause.is_null()
                && (*s).windowClause.is_null()
                && (*s).limitCount.is_null()
                && (*s).limitOffset.is_null()
                && (*s).valuesLists.is_null()
                && (*s).lockingClause.is_null()
                && (*s).intoClause.is_null();
            let from = nodes((*s).fromClause);
            let one_table = from.len() == 1 && (*from[0]).type_ == pg_sys::NodeTag::T_RangeVar;
            let plain_columns = nodes((*s).targetList).into_iter().all(|t| {
                let rt = t as *mut pg_sys::ResTarget;
                (*rt).name.is_null() && !(*rt).val.is_null() && (*(*rt).val).type_ == pg_sys::NodeTag::T_ColumnRef
            });
            if simple && one_table && plain_columns && row_local((*s).whereClause) {
                "row"
            } else {
                "general"
            }
        }
    }
}
