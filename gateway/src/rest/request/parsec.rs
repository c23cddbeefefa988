//! A small parser-combinator engine with Parsec's semantics (Text.Parsec 3), so that
//! PostgREST's query grammars ([`super::grammar`]) fail exactly where and as PostgREST
//! fails: the same position, the same `unexpected …` / `expecting …` messages.
//!
//! What carries over from Parsec: a parser either consumed input or not, and
//! succeeded or not; `alt` tries its second parser only when the first failed without
//! consuming; `attempt` (Parsec's `try`) turns a consumed failure into an empty one;
//! `label` (`<?>`) replaces what an empty parser expected; errors at the same position
//! are merged, the one further on wins; an empty success carries its error along so a
//! later failure at the same place lists every alternative. Messages are rendered as
//! Parsec's `showErrorMessages` renders them.
//!
//! Used only to explain a parameter the request parser refused; input is bounded by
//! the caller (length and nesting) because the grammars recurse.

use std::rc::Rc;

/// One message of a parse error (Parsec's `Message`; order matters when shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Unexpected input, from the primitive parsers (`""` is the end of input).
    SysUnExpect(String),
    /// Unexpected input, from `unexpected`.
    UnExpect(String),
    /// What was expected.
    Expect(String),
}

impl Msg {
    fn rank(&self) -> u8 {
        match self {
            Msg::SysUnExpect(_) => 0,
            Msg::UnExpect(_) => 1,
            Msg::Expect(_) => 2,
        }
    }
}

/// A position: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line.
    pub line: u32,
    /// Column.
    pub col: u32,
}

impl Pos {
    fn next(self, c: char) -> Pos {
        match c {
            '\n' => Pos { line: self.line + 1, col: 1 },
            '\t' => Pos { line: self.line, col: self.col + 8 - ((self.col - 1) % 8) },
            _ => Pos { line: self.line, col: self.col + 1 },
        }
    }
}

/// A parse error: where, and its messages.
#[derive(Debug, Clone)]
pub struct PErr {
    /// Where.
    pub pos: Pos,
    /// Messages in the order they were added.
    pub msgs: Vec<Msg>,
}

impl PErr {
    fn unknown(pos: Pos) -> PErr {
        PErr { pos, msgs: vec![] }
    }

    fn at(pos: Pos, m: Msg) -> PErr {
        PErr { pos, msgs: vec![m] }
    }

    /// Parsec's `mergeError`: the meaningful one, else the further one, else both.
    fn merge(self, other: PErr) -> PErr {
        if other.msgs.is_empty() && !self.msgs.is_empty() {
            return self;
        }
        if self.msgs.is_empty() && !other.msgs.is_empty() {
            return other;
        }
        match self.pos.cmp(&other.pos) {
            std::cmp::Ordering::Equal => {
                let mut msgs = self.msgs;
                msgs.extend(other.msgs);
                PErr { pos: self.pos, msgs }
            }
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
        }
    }

    fn expecting(mut self, label: &str) -> PErr {
        self.msgs.retain(|m| !matches!(m, Msg::Expect(_)));
        self.msgs.push(Msg::Expect(label.to_owned()));
        self
    }

    /// Parsec's `showErrorMessages "or" "unknown parse error" "expecting"
    /// "unexpected" "end of input"`, lines joined by spaces (as PostgREST does).
    pub fn details(&self) -> String {
        if self.msgs.is_empty() {
            return "unknown parse error".into();
        }
        let mut msgs = self.msgs.clone();
        msgs.sort_by_key(Msg::rank);
        let text = |m: &Msg| match m {
            Msg::SysUnExpect(s) | Msg::UnExpect(s) | Msg::Expect(s) => s.clone(),
        };
        let sys: Vec<String> = msgs.iter().filter(|m| matches!(m, Msg::SysUnExpect(_))).map(text).collect();
        let un: Vec<String> = msgs.iter().filter(|m| matches!(m, Msg::UnExpect(_))).map(text).collect();
        let exp: Vec<String> = msgs.iter().filter(|m| matches!(m, Msg::Expect(_))).map(text).collect();
        let show_many = |pre: &str, ms: &[String]| -> String {
            let ms = clean(ms);
            if ms.is_empty() {
                String::new()
            } else {
                format!("{pre} {}", commas_or(&ms))
            }
        };
        let show_sys = if !un.is_empty() || sys.is_empty() {
            String::new()
        } else if sys[0].is_empty() {
            "unexpected end of input".to_owned()
        } else {
            format!("unexpected {}", sys[0])
        };
        let parts = clean(&[show_sys, show_many("unexpected", &un), show_many("expecting", &exp)]);
        parts.join("\n").replace('\n', " ").trim().to_owned()
    }
}

/// Parsec's `clean`: drop empty strings and repeats, keep the order.
fn clean(ms: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for m in ms {
        if !m.is_empty() && !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

fn commas_or(ms: &[String]) -> String {
    match ms {
        [] => String::new(),
        [m] => m.clone(),
        _ => format!("{} or {}", ms[..ms.len() - 1].join(", "), ms[ms.len() - 1]),
    }
}

/// Haskell's `show` of a string (`"a\"b"`; characters outside printable ASCII as
/// decimal escapes).
pub fn show_str(s: &str) -> String {
    let mut out = String::from("\"");
    let mut numeric = false;
    for c in s.chars() {
        if numeric && c.is_ascii_digit() {
            out.push_str("\\&");
        }
        numeric = false;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                out.push_str(&format!("\\{}", c as u32));
                numeric = true;
            }
        }
    }
    out.push('"');
    out
}

/// Haskell's `show` of a character (`'a'`).
fn show_char(c: char) -> String {
    match c {
        '\'' => "'\\''".into(),
        '\\' => "'\\\\'".into(),
        '\n' => "'\\n'".into(),
        '\t' => "'\\t'".into(),
        ' '..='~' => format!("'{c}'"),
        _ => format!("'\\{}'", c as u32),
    }
}

/// Where a parser is.
#[derive(Debug, Clone, Copy)]
pub struct St {
    i: usize,
    pos: Pos,
}

/// A parser's outcome: consumed or empty, success or error.
pub enum R {
    /// Consumed input and succeeded.
    COk(String, St, PErr),
    /// Consumed input and failed.
    CErr(PErr),
    /// Succeeded without consuming.
    EOk(String, St, PErr),
    /// Failed without consuming.
    EErr(PErr),
}

/// A parser over characters producing text.
pub type P = Rc<dyn Fn(&[char], St) -> R>;

/// Runs `p` over `input`: `Err` is Parsec's error.
pub fn run(p: &P, input: &str) -> Result<String, PErr> {
    let chars: Vec<char> = input.chars().collect();
    match p(&chars, St { i: 0, pos: Pos { line: 1, col: 1 } }) {
        R::COk(v, ..) | R::EOk(v, ..) => Ok(v),
        R::CErr(e) | R::EErr(e) => Err(e),
    }
}

/// One character that `f` accepts (unlabelled, as Parsec's `satisfy`).
pub fn satisfy(f: impl Fn(char) -> bool + 'static) -> P {
    Rc::new(move |inp, s| match inp.get(s.i) {
        None => R::EErr(PErr::at(s.pos, Msg::SysUnExpect(String::new()))),
        Some(&c) if f(c) => {
            let n = St { i: s.i + 1, pos: s.pos.next(c) };
            R::COk(c.to_string(), n, PErr::unknown(n.pos))
        }
        Some(&c) => R::EErr(PErr::at(s.pos, Msg::SysUnExpect(show_str(&c.to_string())))),
    })
}

/// `char c`.
pub fn ch(c: char) -> P {
    label(satisfy(move |x| x == c), &show_str(&c.to_string()))
}

/// `anyChar`.
pub fn any_char() -> P {
    satisfy(|_| true)
}

/// `oneOf`.
pub fn one_of(set: &'static str) -> P {
    satisfy(move |c| set.contains(c))
}

/// `noneOf`.
pub fn none_of(set: &'static str) -> P {
    satisfy(move |c| !set.contains(c))
}

/// `letter` (Unicode letters, as Haskell's `isAlpha`).
pub fn letter() -> P {
    label(satisfy(char::is_alphabetic), "letter")
}

/// `digit` (ASCII).
pub fn digit() -> P {
    label(satisfy(|c| c.is_ascii_digit()), "digit")
}

/// `string s`: all or nothing; a mismatch after the first character has consumed.
pub fn string(s: &'static str) -> P {
    let want: Vec<char> = s.chars().collect();
    Rc::new(move |inp, st| {
        if want.is_empty() {
            return R::EOk(String::new(), st, PErr::unknown(st.pos));
        }
        let mut pos = st.pos;
        for (k, w) in want.iter().enumerate() {
            let got = inp.get(st.i + k);
            if got != Some(w) {
                let un = got.map(|c| show_str(&c.to_string())).unwrap_or_default();
                let e = PErr { pos: st.pos, msgs: vec![Msg::SysUnExpect(un), Msg::Expect(show_str(s))] };
                return if k == 0 { R::EErr(e) } else { R::CErr(e) };
            }
            pos = pos.next(*w);
        }
        let n = St { i: st.i + want.len(), pos };
        R::COk(s.to_owned(), n, PErr::unknown(pos))
    })
}

/// `p <?> l`.
pub fn label(p: P, l: &str) -> P {
    let l = l.to_owned();
    Rc::new(move |inp, s| match p(inp, s) {
        R::EOk(v, n, e) => R::EOk(v, n, if e.msgs.is_empty() { e } else { e.expecting(&l) }),
        R::EErr(e) => R::EErr(e.expecting(&l)),
        other => other,
    })
}

/// `try p`.
pub fn attempt(p: P) -> P {
    Rc::new(move |inp, s| match p(inp, s) {
        R::CErr(e) => R::EErr(e),
        other => other,
    })
}

/// `lookAhead p`.
pub fn look_ahead(p: P) -> P {
    Rc::new(move |inp, s| match p(inp, s) {
        R::COk(v, ..) | R::EOk(v, ..) => R::EOk(v, s, PErr::unknown(s.pos)),
        other => other,
    })
}

/// `p <|> q`.
pub fn alt(p: P, q: P) -> P {
    Rc::new(move |inp, s| match p(inp, s) {
        R::EErr(e1) => match q(inp, s) {
            R::EOk(v, n, e2) => R::EOk(v, n, e1.merge(e2)),
            R::EErr(e2) => R::EErr(e1.merge(e2)),
            other => other,
        },
        other => other,
    })
}

/// `choice`.
pub fn choice(ps: Vec<P>) -> P {
    ps.into_iter().rev().reduce(|acc, p| alt(p, acc)).unwrap_or_else(zero)
}

/// `p >>= f`.
pub fn bind(p: P, f: impl Fn(String) -> P + 'static) -> P {
    // As Parsec: an unknown error of `p` is dropped, not merged.
    let join = |e: PErr, e2: PErr| if e.msgs.is_empty() { e2 } else { e.merge(e2) };
    Rc::new(move |inp, s| match p(inp, s) {
        R::COk(x, n, e) => match f(x)(inp, n) {
            R::EOk(y, n2, e2) => R::COk(y, n2, join(e, e2)),
            R::EErr(e2) => R::CErr(join(e, e2)),
            other => other,
        },
        R::EOk(x, n, e) => match f(x)(inp, n) {
            R::EOk(y, n2, e2) => R::EOk(y, n2, join(e, e2)),
            R::EErr(e2) => R::EErr(join(e, e2)),
            other => other,
        },
        R::CErr(e) => R::CErr(e),
        R::EErr(e) => R::EErr(e),
    })
}

/// `p >> q` (the value of `q`).
pub fn then(p: P, q: P) -> P {
    bind(p, move |_| q.clone())
}

/// `p <* q` (the value of `p`).
pub fn skip(p: P, q: P) -> P {
    bind(p, move |x| {
        let q = q.clone();
        map(q, move |_| x.clone())
    })
}

/// Both values, concatenated.
pub fn seq(ps: Vec<P>) -> P {
    ps.into_iter().reduce(|acc, p| bind(acc, move |x| map(p.clone(), move |y| format!("{x}{y}")))).unwrap_or_else(|| pure(""))
}

/// `fmap`.
pub fn map(p: P, f: impl Fn(String) -> String + 'static) -> P {
    let f = Rc::new(f);
    Rc::new(move |inp, s| match p(inp, s) {
        R::COk(v, n, e) => R::COk(f(v), n, e),
        R::EOk(v, n, e) => R::EOk(f(v), n, e),
        other => other,
    })
}

/// `return x`.
pub fn pure(x: &str) -> P {
    let x = x.to_owned();
    Rc::new(move |_, s| R::EOk(x.clone(), s, PErr::unknown(s.pos)))
}

/// `mzero` / a failed `guard`.
pub fn zero() -> P {
    Rc::new(|_, s| R::EErr(PErr::unknown(s.pos)))
}

/// `unexpected`.
fn unexpected(m: String) -> P {
    Rc::new(move |_, s| R::EErr(PErr::at(s.pos, Msg::UnExpect(m.clone()))))
}

/// `many p` (values concatenated with `sep`).
pub fn many_sep(p: P, sep: &'static str) -> P {
    Rc::new(move |inp, s| {
        let mut acc: Vec<String> = vec![];
        let mut cur = s;
        let mut consumed = false;
        loop {
            match p(inp, cur) {
                R::COk(v, n, _) => {
                    acc.push(v);
                    cur = n;
                    consumed = true;
                }
                // Parsec stops with an error here; the grammars never do this.
                R::EOk(_, _, e) => return if consumed { R::COk(acc.join(sep), cur, e) } else { R::EOk(acc.join(sep), cur, e) },
                R::CErr(e) => return R::CErr(e),
                R::EErr(e) => return if consumed { R::COk(acc.join(sep), cur, e) } else { R::EOk(acc.join(sep), cur, e) },
            }
        }
    })
}

/// `many p`.
pub fn many(p: P) -> P {
    many_sep(p, "")
}

/// `many1 p`.
pub fn many1(p: P) -> P {
    seq(vec![p.clone(), many(p)])
}

/// `option x p`.
pub fn option(x: &str, p: P) -> P {
    alt(p, pure(x))
}

/// `sepBy1 p sep` (values joined with `\u{0}`).
pub fn sep_by1(p: P, sep: P) -> P {
    bind(p.clone(), move |x| map(many_sep(then(sep.clone(), p.clone()), "\u{0}"), move |rest| if rest.is_empty() { x.clone() } else { format!("{x}\u{0}{rest}") }))
}

/// `sepBy p sep`.
pub fn sep_by(p: P, sep: P) -> P {
    alt(sep_by1(p, sep), pure(""))
}

/// `between open close p`.
pub fn between(open: P, close: P, p: P) -> P {
    then(open, skip(p, close))
}

/// `notFollowedBy p` (`p` yields one character, shown as Haskell shows a `Char`).
pub fn not_followed_by(p: P) -> P {
    let inner = bind(attempt(p), |c| unexpected(c.chars().next().map(show_char).unwrap_or_default()));
    attempt(alt(inner, pure("")))
}

/// `eof`.
pub fn eof() -> P {
    let any_token: P = Rc::new(|inp, s| match inp.get(s.i) {
        None => R::EErr(PErr::at(s.pos, Msg::SysUnExpect(String::new()))),
        // anyToken does not move the position.
        Some(&c) => R::COk(c.to_string(), St { i: s.i + 1, pos: s.pos }, PErr::unknown(s.pos)),
    });
    label(not_followed_by(any_token), "end of input")
}

/// A parser built when first run (for recursive grammars); each level of recursion
/// grows the stack on the heap when it runs low, whatever thread it runs on.
pub fn lazy(f: fn() -> P) -> P {
    Rc::new(move |inp, s| stacker::maybe_grow(128 * 1024, 1024 * 1024, || f()(inp, s)))
}
