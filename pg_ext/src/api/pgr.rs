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

    fn refuse(msg: &str) -> ! {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid live query: {msg}"),
            "a live query must be exactly one read-only SELECT"
        );
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
}
