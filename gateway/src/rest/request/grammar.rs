//! PostgREST's query-parameter grammars (`ApiRequest/QueryParams.hs`: select, tree
//! paths, filters, order, logic trees, columns / on_conflict), written over the
//! Parsec-semantics engine in [`super::parsec`], so a refused parameter gets
//! PostgREST's own PGRST100 body: `message` `"failed to parse select parameter (…)"
//! (line 1, column 9)`, `details` `unexpected "-" expecting digit`.
//!
//! The request parser ([`super::parse_query`]) decides what a parameter means; when
//! it refuses one, [`explain`] reruns that parameter through PostgREST's grammar for
//! the message (the request parser's own message stays if the grammar accepts it).

use super::parsec::{
    alt, any_char, attempt, between, bind, ch, choice, digit, eof, label, lazy, letter, look_ahead, many, many1, map, none_of, not_followed_by, one_of, option, pure, run, sep_by,
    sep_by1, seq, skip, string, then, zero, P,
};
use crate::error::code::pgrst;
use crate::rest::error::RestError;

/// Longest parameter explained: the grammars recurse and backtrack (a 4 KB logic
/// tree cost ~15 ms of CPU to explain, 1 KB ~5 ms); longer ones get our own message.
const MAX_LEN: usize = 1024;
/// Most parentheses in a parameter explained.
const MAX_PARENS: usize = 64;

fn ws() -> P {
    many(one_of(" \t"))
}

fn lexeme(p: P) -> P {
    then(ws(), skip(p, ws()))
}

fn option_maybe(p: P) -> P {
    option("", p)
}

fn delimiter() -> P {
    label(ch('.'), "delimiter (.)")
}

fn identifier() -> P {
    map(many1(alt(alt(letter(), digit()), one_of("_ $"))), |s| s.trim().to_owned())
}

fn quoted_value() -> P {
    between(ch('"'), ch('"'), many(alt(none_of("\\\""), then(ch('\\'), any_char()))))
}

fn sep_by_dash(ident: P) -> P {
    let dash = attempt(then(ch('-'), not_followed_by(ch('>'))));
    map(sep_by1(ident, dash), |s| s.replace('\u{0}', "-"))
}

fn field_name() -> P {
    label(alt(quoted_value(), sep_by_dash(identifier())), "field name (* or [a..z0..9_$])")
}

fn json_key_name() -> P {
    let ident = map(many1(none_of("(-:.,>)")), |s| s.trim().to_owned());
    label(alt(quoted_value(), sep_by_dash(ident)), "any non reserved character different from: .,>()")
}

fn json_path() -> P {
    let arrow = alt(attempt(string("->>")), attempt(string("->")));
    let end =
        choice(vec![attempt(look_ahead(string("->"))), attempt(look_ahead(string("::"))), attempt(look_ahead(string("."))), attempt(look_ahead(string(","))), attempt(eof())]);
    let idx = skip(seq(vec![option("+", ch('-')), many1(digit())]), end);
    let operand = alt(attempt(idx), attempt(json_key_name()));
    many(then(arrow, operand))
}

fn field() -> P {
    lexeme(seq(vec![field_name(), option("", json_path())]))
}

fn alias_separator() -> P {
    then(ch(':'), not_followed_by(ch(':')))
}

fn tree_path() -> P {
    then(sep_by1(field_name(), delimiter()), option("", json_path()))
}

fn embed_params() -> P {
    let param = || then(ch('!'), choice(vec![attempt(string("left")), attempt(string("inner")), attempt(field_name())]));
    then(option_maybe(param()), option_maybe(param()))
}

fn relation_select() -> P {
    let alias = option_maybe(attempt(skip(field_name(), alias_separator())));
    let name = bind(field_name(), |n| if n == "count" { zero() } else { pure(&n) });
    lexeme(seq(vec![alias, name, embed_params(), attempt(look_ahead(string("(")))]))
}

fn spread_select() -> P {
    lexeme(seq(vec![string("..."), field_name(), embed_params(), attempt(look_ahead(string("(")))]))
}

fn field_select() -> P {
    let end = || choice(vec![attempt(look_ahead(string(")"))), attempt(look_ahead(string(","))), attempt(eof())]);
    let alias = || option_maybe(attempt(skip(field_name(), alias_separator())));
    let cast = || option_maybe(then(string("::"), identifier()));
    let aggregation = choice(vec![string("sum"), string("avg"), string("count"), attempt(string("max")), attempt(string("min"))]);
    lexeme(choice(vec![
        attempt(seq(vec![string("*"), end()])),
        attempt(seq(vec![alias(), string("count()"), cast(), end()])),
        seq(vec![alias(), field(), cast(), option_maybe(attempt(then(ch('.'), skip(aggregation, string("()"))))), cast(), end()]),
    ]))
}

fn field_forest() -> P {
    let children = || between(ch('('), ch(')'), lazy(field_forest));
    let tree = choice(vec![seq(vec![attempt(spread_select()), children()]), seq(vec![attempt(relation_select()), children()]), field_select()]);
    sep_by(tree, lexeme(ch(',')))
}

fn op_expr(value: fn() -> P) -> P {
    let ci = |s: &'static str| seq(s.chars().map(|c| alt(ch(c), ch(c.to_ascii_uppercase()))).collect());
    let is_val = label(
        choice(vec![attempt(ci("null")), attempt(ci("not_null")), attempt(ci("true")), attempt(ci("false")), attempt(ci("unknown"))]),
        "isVal: (null, not_null, true, false, unknown)",
    );
    let ops = |names: &[&'static str]| label(choice(names.iter().map(|n| attempt(string(n))).collect()), "unknown single value operator");
    let simple = ops(&["neq", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"]);
    let quant = ops(&["eq", "gte", "gt", "lte", "lt", "like", "ilike", "match", "imatch"]);
    let list_element = alt(attempt(skip(quoted_value(), not_followed_by(none_of(",)")))), many(none_of(",)")));
    let list = then(lexeme(ch('(')), skip(sep_by1(list_element, ch(',')), lexeme(ch(')'))));
    let p_in = then(attempt(then(string("in"), delimiter())), list);
    let p_is = then(attempt(then(string("is"), delimiter())), is_val);
    let p_dist = then(attempt(then(string("isdistinct"), delimiter())), value());
    let fts_op = choice(vec![attempt(string("fts")), attempt(string("plfts")), attempt(string("phfts")), attempt(string("wfts"))]);
    let p_fts = seq(vec![fts_op, option_maybe(attempt(between(ch('('), ch(')'), identifier()))), delimiter(), value()]);
    let p_simple = seq(vec![simple, delimiter(), value()]);
    let quantifier = option_maybe(attempt(between(ch('('), ch(')'), alt(attempt(string("any")), string("all")))));
    let p_quant = seq(vec![quant, quantifier, delimiter(), value()]);
    let operation = label(choice(vec![p_in, p_is, p_dist, attempt(p_fts), attempt(p_simple), attempt(p_quant)]), "operator (eq, gt, ...)");
    then(alt(attempt(then(string("not"), delimiter())), pure("")), operation)
}

fn single_value() -> P {
    many(any_char())
}

fn logic_value() -> P {
    let array = seq(vec![string("{"), many(none_of("{}")), string("}")]);
    choice(vec![attempt(skip(quoted_value(), not_followed_by(none_of(",)")))), attempt(array), many(none_of(",)"))])
}

fn logic_tree() -> P {
    let filter = then(skip(field(), delimiter()), op_expr(logic_value));
    let not = label(alt(attempt(then(string("not"), delimiter())), pure("")), "negation operator (not)");
    let op = label(alt(attempt(string("and")), string("or")), "logic operator (and, or)");
    let children = then(lexeme(ch('(')), skip(sep_by1(lazy(logic_tree), lexeme(ch(','))), lexeme(ch(')'))));
    alt(attempt(filter), seq(vec![not, op, children]))
}

fn order() -> P {
    let dir = || alt(attempt(then(delimiter(), string("asc"))), attempt(then(delimiter(), string("desc"))));
    let nulls = || alt(attempt(then(delimiter(), string("nullsfirst"))), attempt(then(delimiter(), string("nullslast"))));
    let end = || alt(attempt(look_ahead(ch(','))), attempt(eof()));
    let tail = || seq(vec![option_maybe(dir()), alt(skip(option_maybe(nulls()), end()), end())]);
    let term = seq(vec![field(), tail()]);
    let relation_term = seq(vec![field_name(), between(ch('('), ch(')'), field()), tail()]);
    sep_by1(lexeme(alt(attempt(relation_term), term)), ch(','))
}

fn columns() -> P {
    sep_by1(field_name(), lexeme(ch(',')))
}

/// Runs one grammar over `input`; PostgREST's error if it refuses.
fn check(p: P, what: &str, input: &str) -> Result<String, RestError> {
    run(&p, input)
        .map_err(|e| RestError::new(pgrst::QUERY_PARSE, format!("\"failed to parse {what} ({input})\" (line {}, column {})", e.pos.line, e.pos.col), Some(e.details()), None))
}

/// PostgREST's parse error for the query parameter `key=value`, if its grammar refuses
/// it (`rpc_read`: a GET /rpc, whose unknown parameters are arguments).
pub fn explain(key: &str, value: &str, rpc_read: bool) -> Option<RestError> {
    if key.len() + value.len() > MAX_LEN || key.matches('(').count() + value.matches('(').count() > MAX_PARENS {
        return None;
    }
    let last = key.rsplit('.').next().unwrap_or(key);
    let outcome = (|| -> Result<(), RestError> {
        match key {
            "select" => return check(field_forest(), "select parameter", value).map(drop),
            "columns" => return check(columns(), "columns parameter", value).map(drop),
            "on_conflict" => return check(columns(), "on_conflict parameter", value).map(drop),
            _ => {}
        }
        match last {
            "and" | "or" => {
                let path = check(sep_by1(field_name(), delimiter()), "logic path", key)?;
                let parts: Vec<&str> = path.split('\u{0}').collect();
                let op = parts.last().copied().unwrap_or("");
                let op = if parts.contains(&"not") { format!("not.{op}") } else { op.to_owned() };
                let text = format!("{op}{value}");
                run(&logic_tree(), &text).map(drop).map_err(|e| {
                    RestError::new(pgrst::QUERY_PARSE, format!("\"failed to parse logic tree ({value})\" (line {}, column {})", e.pos.line, e.pos.col), Some(e.details()), None)
                })
            }
            "order" => {
                check(tree_path(), "tree path", key)?;
                check(order(), "order", value).map(drop)
            }
            "limit" | "offset" => check(tree_path(), "tree path", key).map(drop),
            _ => {
                check(tree_path(), "tree path", key)?;
                if rpc_read {
                    return Ok(());
                }
                check(op_expr(single_value), "filter", value).map(drop)
            }
        }
    })();
    outcome.err()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line 1, column, details) of a grammar's error, as the doctests in
    /// PostgREST's QueryParams.hs show them.
    fn fails(p: P, input: &str) -> (u32, String) {
        let e = run(&p, input).expect_err(input);
        (e.pos.col, e.details())
    }

    #[test]
    fn postgrest_doctests_select() {
        assert_eq!(
            fails(field_forest(), "id,clients(name[])"),
            (16, "unexpected '[' expecting letter, digit, \"-\", \"->>\", \"->\", \"::\", \".\", \")\", \",\" or end of input".into())
        );
        assert_eq!(fails(field_forest(), "data->>-78xy"), (11, "unexpected 'x' expecting digit, \"->\", \"::\", \".\", \",\" or end of input".into()));
        assert_eq!(fails(field_forest(), "data->>--34"), (9, "unexpected \"-\" expecting digit".into()));
        assert_eq!(fails(field_select(), "name!hint"), (5, "unexpected '!' expecting letter, digit, \"-\", \"->>\", \"->\", \"::\", \".\", \")\", \",\" or end of input".into()));
        assert_eq!(fails(field_select(), "*!hint"), (2, "unexpected '!' expecting \")\", \",\" or end of input".into()));
        assert_eq!(fails(field_select(), "name::"), (7, "unexpected end of input expecting letter or digit".into()));
        assert_eq!(fails(field_name(), ":"), (1, "unexpected \":\" expecting field name (* or [a..z0..9_$])".into()));
        assert_eq!(fails(relation_select(), "rel->jsonpath(*)"), (6, "unexpected '>'".into()));
        assert_eq!(fails(spread_select(), "rel(*)"), (1, "unexpected \"r\" expecting \"...\"".into()));
        assert_eq!(fails(spread_select(), "...rel->jsonpath(*)"), (9, "unexpected '>'".into()));
        assert_eq!(fails(json_path(), "->>-xy-4").1, "unexpected \"x\" expecting digit");
        for ok in ["id", "client(id)", "*,client(*,nested(*))", "*,...client(*),other(*)", "", "alias:name->jsonpath::cast", "count()", "a:b!inner(*)", "x.sum()"] {
            assert!(run(&field_forest(), ok).is_ok(), "{ok}");
        }
        assert_eq!(run(&field_name(), " no leading or trailing spaces ").unwrap(), "no leading or trailing spaces");
        assert_eq!(run(&field_name(), "identifier-with-dashes").unwrap(), "identifier-with-dashes");
    }

    #[test]
    fn postgrest_doctests_filters() {
        let f = || op_expr(single_value);
        assert_eq!(fails(f(), "fts().value"), (5, "unexpected \")\" expecting operator (eq, gt, ...)".into()));
        assert_eq!(fails(f(), "eq().value"), (4, "unexpected \")\" expecting operator (eq, gt, ...)".into()));
        assert_eq!(fails(f(), "is().value"), (3, "unexpected \"(\" expecting operator (eq, gt, ...)".into()));
        assert_eq!(fails(f(), "in().value"), (3, "unexpected \"(\" expecting operator (eq, gt, ...)".into()));
        assert_eq!(fails(f(), "val"), (1, "unexpected \"v\" expecting \"not\" or operator (eq, gt, ...)".into()));
        assert_eq!(fails(f(), "noop.0"), (1, "unexpected \"o\" expecting \"not\" or operator (eq, gt, ...)".into()));
        for ok in ["eq(any).value", "not.eq(all).value", "in.(1,2)", "is.NULL", "fts(english).a", "isdistinct.3", "cs.{1,2}"] {
            assert!(run(&f(), ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn postgrest_doctests_order() {
        let cases = [
            ("clients(name,id)", 8, "unexpected '(' expecting letter, digit, \"-\", \"->>\", \"->\", delimiter (.), \",\" or end of input"),
            ("id.ac", 4, "unexpected \"c\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""),
            ("id.descc", 8, "unexpected 'c' expecting delimiter (.), \",\" or end of input"),
            ("id.nulsfist", 4, "unexpected \"n\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""),
            ("id.nullslasttt", 13, "unexpected 't' expecting \",\" or end of input"),
            ("id.asc.nlsfst", 8, "unexpected \"l\" expecting \"nullsfirst\" or \"nullslast\""),
            ("id.asc.nullslasttt", 17, "unexpected 't' expecting \",\" or end of input"),
            ("id.asc.smth34", 8, "unexpected \"s\" expecting \"nullsfirst\" or \"nullslast\""),
        ];
        for (input, col, details) in cases {
            assert_eq!(fails(order(), input), (col, details.to_owned()), "{input}");
        }
        for ok in ["name.desc.nullsfirst", "json_col->key.asc.nullslast", "clients(json_col->key).desc.nullsfirst", "name,clients(name),id"] {
            assert!(run(&order(), ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn postgrest_doctests_logic_trees() {
        let cases = [
            ("or()", 4, "unexpected \")\" expecting field name (* or [a..z0..9_$]), negation operator (not) or logic operator (and, or)"),
            ("or(id.in.1,2,id.eq.3)", 10, "unexpected \"1\" expecting \"(\""),
            ("or)(", 3, "unexpected \")\" expecting \"(\""),
            ("and(ord(id.eq.1,id.eq.1),id.eq.2)", 7, "unexpected \"d\" expecting \"(\""),
            ("or(id.eq.1,not.xor(id.eq.2,id.eq.3))", 16, "unexpected \"x\" expecting logic operator (and, or)"),
        ];
        for (input, col, details) in cases {
            assert_eq!(fails(logic_tree(), input), (col, details.to_owned()), "{input}");
        }
        assert!(run(&logic_tree(), "or(a.eq.1, not.and(b.gt.2,c.is.null),d.cs.{1,2})").is_ok());
    }

    #[test]
    fn explained_bodies_are_postgrests() {
        let e = explain("or", "()", false).unwrap();
        assert_eq!(e.message, "\"failed to parse logic tree (())\" (line 1, column 4)");
        let e = explain("select", "data->>--34", false).unwrap();
        assert_eq!(e.message, "\"failed to parse select parameter (data->>--34)\" (line 1, column 9)");
        assert_eq!(e.details, "unexpected \"-\" expecting digit");
        let e = explain("id", "val", false).unwrap();
        assert_eq!(e.message, "\"failed to parse filter (val)\" (line 1, column 1)");
        assert!(explain("id", "val", true).is_none(), "an RPC argument");
        assert!(explain("id", "eq.1", false).is_none());
        assert!(explain("select", &"a(".repeat(1000), false).is_none(), "too deep to explain: the request parser's message stays");
        // The deepest explained nesting runs on a small stack (recursion grows on the heap).
        let deep = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| (explain("select", &format!("{}x", "a(".repeat(60)), false), explain("or", &format!("{}a.eq.1", "(or".repeat(60)), false)))
            .unwrap()
            .join()
            .unwrap();
        assert!(deep.0.is_some() && deep.1.is_some());
    }
}
