//! Input generators: random text and bytes, token soups over a grammar's vocabulary,
//! and deep nesting (up to 10,000 levels) of the constructs parsers recurse on.

use proptest::prelude::*;
use proptest::sample::select;

/// Any chars (proptest weights towards unusual ones: controls, surrogate-adjacent,
/// combining marks, ...).
pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// Printable ASCII and the punctuation parsers care about.
pub fn ascii(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![32u8..127, Just(b'\t'), Just(b'\n'), Just(b'\r')], 0..max).prop_map(|v| v.into_iter().map(char::from).collect())
}

/// Any bytes.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// A concatenation of up to `max` tokens of `vocab`.
pub fn soup(vocab: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(vocab), 0..max).prop_map(|v| v.concat())
}

/// Soup, random text or random ASCII.
pub fn mixed(vocab: &'static [&'static str], max: usize) -> BoxedStrategy<String> {
    prop_oneof![6 => soup(vocab, max), 2 => ascii(max * 2), 2 => text(max)].boxed()
}

/// Nesting depths: mostly small, around the gateway's bound, and very deep.
pub fn depth() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..40, 1 => Just(24usize), 1 => Just(25usize), 2 => 40usize..=10_000, 1 => Just(10_000usize)]
}

/// `open` × d, then `middle`, then `close` × d.
pub fn nest(open: &str, middle: &str, close: &str, d: usize) -> String {
    let mut s = String::with_capacity((open.len() + close.len()) * d + middle.len());
    for _ in 0..d {
        s.push_str(open);
    }
    s.push_str(middle);
    for _ in 0..d {
        s.push_str(close);
    }
    s
}

/// Tokens of the REST query grammar, with the names of the fuzz schema's tables and
/// columns so that generated requests get past name checks into the planner.
pub const QUERY: &[&str] = &[
    "select=",
    "order=",
    "limit=",
    "offset=",
    "or=",
    "and=",
    "not.or=",
    "not.and=",
    "columns=",
    "on_conflict=",
    "=",
    "&",
    "&",
    "(",
    ")",
    ",",
    ",",
    ".",
    ".",
    ":",
    "::",
    "->",
    "->>",
    "\"",
    "\\",
    "!",
    "!inner",
    "!left",
    "*",
    "not.",
    "eq.",
    "neq.",
    "gt.",
    "lte.",
    "like.",
    "ilike.",
    "in.",
    "is.",
    "cs.",
    "ov.",
    "fts.",
    "fts(english).",
    "like(any).",
    "eq(all).",
    "(any)",
    "(all)",
    "asc",
    "desc",
    "nullsfirst",
    "nullslast",
    "null",
    "true",
    "id",
    "name",
    "data",
    "tags",
    "owner",
    "items",
    "owners",
    "item_tags",
    "tag",
    "qty",
    "alias:",
    "text",
    "int4",
    "integer",
    "[]",
    "a",
    "b",
    "x y",
    " ",
    "-",
    "-1",
    "0",
    "1",
    "2.5",
    "9223372036854775807",
    "99999999999999999999",
    "%",
    "%2",
    "%22",
    "%28",
    "%29",
    "%2C",
    "%26",
    "%3D",
    "%00",
    "%FF",
    "%C3%A9",
    "+",
    "é",
    "日本",
    "\u{301}",
    "\u{0}",
    "\u{202e}",
    "{",
    "}",
    "[",
    "]",
    "$",
    "_",
    "'",
    ";",
    "--",
    "\n",
    "\"a,b\"",
    "\\\"",
    "...",
    "items.",
    "owners.",
    // Shapes of a reported injection: an unquoted "-" key, comments, newlines in names.
    "->\"-\"",
    "->-",
    "->\"-\"->a",
    "/*",
    "*/",
    "%0A",
    "\"%0A",
    "\"x%0Ay\":",
    "data->\"-\"->k",
];

/// A query string that nests one construct `d` deep; `true` when the gateway must
/// refuse it for its depth (select embeds and logic trees past MAX_DEPTH = 24).
pub fn deep_query() -> impl Strategy<Value = (String, bool)> {
    (0u8..16, depth(), soup(QUERY, 6)).prop_map(|(kind, d, junk)| {
        let deep = d > 26;
        match kind {
            // owners ↔ items alternate: every level resolves to one relationship.
            0 => (format!("select=id,{}", nest("owners(items(", "id", "))", d / 2)), deep),
            1 => (format!("select={}", nest("x:owners!inner(", "*", ")", d)), deep),
            2 => (format!("or=({})", nest("and(", "id.eq.1", ")", d)), deep),
            3 => (format!("and=({})", nest("not.or(", "name.like.a*,id.gt.0", ")", d)), deep),
            4 => (format!("{}or=(id.eq.1)", "items.".repeat(d)), false),
            5 => (format!("{}order=id.desc", "items.".repeat(d)), false),
            6 => (format!("order={}", nest("owners(", "name", ")", d)), false),
            7 => (format!("id=in.{}", nest("(", "1,2", ")", d)), false),
            8 => (format!("select=data{}", "->a".repeat(d)), false),
            9 => (format!("data{}=eq.1", "->>0".repeat(d)), false),
            10 => (format!("name={}eq.x", "not.".repeat(d)), false),
            11 => ("id=eq.1&".repeat(d), false),
            12 => (format!("select={}", ",".repeat(d)), false),
            13 => (format!("select={}{junk}", "(".repeat(d)), false),
            14 => (format!("or={}{junk}", ")".repeat(d)), false),
            _ => (format!("select=\"{}{junk}", "\\\"".repeat(d)), false),
        }
    })
}

/// Tokens of storage object paths.
pub const PATH: &[&str] = &[
    "a",
    "b.png",
    "dir",
    "/",
    "/",
    "//",
    ".",
    "..",
    "...",
    " ",
    ". ",
    ".. ",
    "\\",
    "C:",
    "c:",
    ":",
    "~",
    "%2e",
    "%2f",
    "\u{0}",
    "\n",
    "\u{7f}",
    "\u{85}",
    "\u{202e}",
    "é",
    "e\u{301}",
    "\u{212a}",
    "\u{212a}:",
    "\u{2024}",
    "\u{ff0e}",
    "\u{ff0f}",
    "\u{2215}",
    "日本",
    "\u{fe52}",
    "\u{1f600}",
];

/// Tokens of URLs (redirect targets, webhook endpoints).
pub const URL: &[&str] = &[
    "http://",
    "https://",
    "myapp://",
    "javascript:",
    "file://",
    "//",
    "/",
    "\\",
    "@",
    ":",
    "?",
    "#",
    ".",
    "..",
    "%2F",
    "%40",
    "%2e",
    "app.test",
    "ok.test",
    "evil.test",
    "callback",
    "cb",
    "x",
    "exact://x",
    "app.test.evil.test",
    "ok.test@evil.test",
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0",
    "0.0.0.0",
    "10.0.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "1.1.1.1",
    "8.8.8.8",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::1]",
    "[fe80::1]",
    "[fc00::1]",
    "[2001:db8::1]",
    "[2001::1]",
    "[2606:4700::1111]",
    "[::ffff:1.1.1.1]",
    "localhost",
    "example.com",
    ":80",
    ":443",
    ":8080",
    ":0",
    ":99999",
    "\t",
    " ",
    "\n",
    "ａｐｐ.test",
    "%00",
    "[",
    "]",
];

/// Tokens of JSON text.
pub const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"a\"",
    "\"id\"",
    "\"name\"",
    "\"type\"",
    "\"presence\"",
    "\"broadcast\"",
    "\"state\"",
    "\"payload\"",
    "\"role\"",
    "\"exp\"",
    "\"sub\"",
    "\"url\"",
    "0",
    "-0",
    "1",
    "1.5",
    "1e999",
    "-1e-999",
    "18446744073709551616",
    "-9223372036854775809",
    "true",
    "false",
    "null",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"\\\"",
    "\\",
    " ",
    "\n",
    "\u{feff}",
    "\"é\"",
    "NaN",
    "Infinity",
];

/// JSON nested `d` deep (arrays, objects, or both), past serde_json's limit of 128.
pub fn deep_json() -> impl Strategy<Value = String> {
    (0u8..4, depth()).prop_map(|(kind, d)| match kind {
        0 => nest("[", "1", "]", d),
        1 => nest("{\"a\":", "null", "}", d),
        2 => nest("[{\"b\":", "\"x\"", "}]", d),
        _ => "[".repeat(d),
    })
}

/// JSON values of bounded depth and size.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        soup(QUERY, 4).prop_map(Value::String),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![select(&["id", "name", "data", "tags", "qty", "role", "sub", "exp", "a.b", "app_metadata"][..]).prop_map(str::to_owned), text(6)], inner),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
