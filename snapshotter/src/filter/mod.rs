//! containerd's filter expression language, as accepted by the snapshots `List` RPC (`Walk`).
//!
//! A port of containerd 1.6's `filters` package. A filter string is a comma separated list of
//! *selectors*, all of which must match (AND); a list of filter strings matches when any one of
//! them does (OR), as in containerd's `filters.ParseAll`, which `snapshots/storage` applies to the
//! `filters` of a `ListSnapshotsRequest`.
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]      no operator: the field must be present
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | "quoted"
//! operator  := "==" | "!=" | "~="
//! value     := "quoted" | unquoted             after "~=" also /quoted/ or |quoted|
//! unquoted  := one character that is not "," "." "=" "!" "~" quote or space, then any
//!              printable characters except "," and spaces
//! quoted    := Go string escapes: \a \b \f \n \r \t \v \\ \<quote> \ooo \xhh \uhhhh \Uhhhhhhhh
//! ```
//!
//! Examples: `kind==committed`, `parent==""`, `name~=^foo`, `labels."containerd.io/gc.root"`,
//! `labels."containerd.io/snapshot.ref"==sha256:abc,parent==""`.
//!
//! Semantics, as in containerd (an [`Adaptor`] maps a field path to a value):
//! * `path` matches when the field is present; `path==v` when it is present and equal to `v`;
//!   `path!=v` when its value (`""` if absent) differs from `v`, so an absent label matches
//!   `labels.x!=y` but not `labels.x!=""`; `path~=re` when the value (`""` if absent) contains a
//!   match of `re`, so `labels.x~=^$` matches objects without that label.
//! * The empty filter string matches everything, and so does an empty list, or a list with an
//!   empty string in it. A whitespace-only string is an error. Spaces are skipped before a token
//!   but not after a field path without an operator or after a value: `a==b ,c` is an error.
//! * A label key with characters other than `[A-Za-z0-9_.]` must be quoted:
//!   `labels."containerd.io/gc.root"` (a `"`, `/` or `|` that starts a token opens a quote).
//!   `/re/` and `|re|` are only allowed after `~=`, and in them only Go's string escapes work
//!   (`/\d/` is an error; write `~=\d` or `~="\\d"`). Single quotes and backquotes are ordinary
//!   characters.
//! * Regular expressions use Go's RE2 dialect (`\d`, `\w`, `\s`, `\b` are ASCII-only; `\Q...\E`;
//!   a `{` that starts no repeat is literal). Unlike containerd, which compiles them when matching
//!   and lets a bad one match nothing, an invalid regular expression is a parse error here.
//!
//! containerd's snapshot adaptor (`adaptSnapshot`) maps `kind` to `active`/`view`/`committed`,
//! `name` and `parent` to always-present strings (so `parent==""` selects snapshots without a
//! parent), and `labels.<k1>.<k2>...` to the label named by the components joined with `.`
//! (absent when there are no labels), so `labels.a.b` and `labels."a.b"` are the same key and a
//! bare `labels` looks up the empty key. Every other path is absent.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A parsed set of filters: matches when ANY of the filter strings matches (empty = match all).
#[derive(Debug, Clone)]
pub struct Filter {
    /// One conjunction per filter string; an empty conjunction matches everything.
    alternatives: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses every filter string; an empty slice matches everything, and so does any list that
    /// contains an empty string (containerd's `Parse("")` is `Always`).
    ///
    /// # Errors
    ///
    /// The first filter string that does not parse, with the position of the problem.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        if filters.is_empty() {
            return Ok(Filter::default());
        }
        let alternatives = filters
            .iter()
            .map(|f| parse(f.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Filter { alternatives })
    }

    /// True when the object seen through `adaptor` matches.
    pub fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|s| s.matches(adaptor)))
    }
}

impl Default for Filter {
    /// The filter that matches everything.
    fn default() -> Self {
        Filter {
            alternatives: vec![Vec::new()],
        }
    }
}

/// Looks up a field path (e.g. `["labels", "containerd.io/gc.root"]` or `["kind"]`) on the object
/// being filtered.
pub trait Adaptor {
    /// `Some(value)` if the field is present (its value may be empty), `None` if absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

/// A filter string that cannot be parsed. Its Display names the filter string, the position (a
/// 0-based byte offset, as containerd reports it) and what was wrong or expected there.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A token the grammar does not allow here (`found` is `None` at the end of the input).
    #[error("invalid filter {filter:?}: unexpected {} at position {position}, expected {expected}", describe(.found))]
    Unexpected {
        filter: String,
        position: usize,
        found: Option<String>,
        expected: Expected,
    },
    /// A malformed character or quoted string.
    #[error("invalid filter {filter:?}: {problem} at position {position}")]
    Malformed {
        filter: String,
        position: usize,
        problem: Problem,
    },
    /// The value after `~=` is not a valid regular expression (Go RE2 syntax).
    #[error(
        "invalid filter {filter:?}: invalid regular expression {pattern:?} at position {position}: {reason}"
    )]
    InvalidRegex {
        filter: String,
        position: usize,
        pattern: String,
        reason: String,
    },
}

impl FilterError {
    /// The byte offset in the filter string where the problem was found.
    pub fn position(&self) -> usize {
        match self {
            Self::Unexpected { position, .. }
            | Self::Malformed { position, .. }
            | Self::InvalidRegex { position, .. } => *position,
        }
    }
}

fn describe(found: &Option<String>) -> String {
    found
        .as_ref()
        .map_or_else(|| "end of input".to_owned(), |f| format!("{f:?}"))
}

/// What the parser was looking for when it met an unexpected token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Field,
    Operator,
    Value,
    CommaOrEnd,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Field => r#"a field name ([A-Za-z0-9_]+) or a "double-quoted" field name"#,
            Self::Operator => r#"one of "==", "!=", "~=""#,
            Self::Value => "a value or a quoted value",
            Self::CommaOrEnd => r#""," or the end of the filter"#,
        })
    }
}

/// What is wrong with a character or quoted string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    UnterminatedQuote,
    IllegalEscape,
    IllegalNumericEscape,
    /// An octal escape above `\377` or a `\U` escape above `\U0010FFFF`.
    EscapeOutOfRange,
    /// A `/.../` or `|...|` quote anywhere but after `~=`.
    RegexQuote,
    NulCharacter,
    ReplacementCharacter,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnterminatedQuote => {
                r#"unterminated quoted string ('"', '/' and '|' open a quote)"#
            }
            Self::IllegalEscape => "invalid escape sequence in quoted string",
            Self::IllegalNumericEscape => {
                r"invalid numeric escape (\ooo, \xhh, \uhhhh or \Uhhhhhhhh)"
            }
            Self::EscapeOutOfRange => "escape sequence out of range (above \\377 or \\U0010FFFF)",
            Self::RegexQuote => {
                r#"/.../ and |...| quotes are only allowed after "~=" (use double quotes)"#
            }
            Self::NulCharacter => "NUL character",
            Self::ReplacementCharacter => "U+FFFD replacement character",
        })
    }
}

#[derive(Debug, Clone)]
struct Selector {
    /// `None` when a quoted component decodes to non-UTF-8 bytes (`"\xff"`): no `String` key can
    /// equal it, so the field is treated as absent, as a Go map lookup would find it.
    path: Option<Vec<String>>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(Vec<u8>),
    NotEqual(Vec<u8>),
    Matches(Regex),
}

impl Selector {
    fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        let found = self.path.as_ref().and_then(|path| adaptor.field(path));
        let value = found.as_deref().unwrap_or("");
        match &self.op {
            Op::Present => found.is_some(),
            Op::Equal(v) => found.is_some() && value.as_bytes() == v.as_slice(),
            Op::NotEqual(v) => value.as_bytes() != v.as_slice(),
            Op::Matches(re) => re.is_match(value),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    sc: Scanner<'a>,
}

fn parse(input: &str) -> Result<Vec<Selector>, FilterError> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = Parser {
        input,
        sc: Scanner::new(input),
    };
    let mut all = vec![p.selector()?];
    loop {
        match p.sc.peek() {
            Ch::Eof => return Ok(all),
            Ch::C(',') => {
                p.sc.scan();
                all.push(p.selector()?);
            }
            Ch::C(c) | Ch::Bad(c) => {
                let found = Some(c.to_string());
                return Err(p.unexpected(p.sc.ppos, found, Expected::CommaOrEnd));
            }
        }
    }
}

impl<'a> Parser<'a> {
    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.fieldpath()?;
        if matches!(self.sc.peek(), Ch::Eof | Ch::C(',')) {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        }
        let kind = self.operator()?;
        let (token, value) = self.value(matches!(kind, OpKind::Matches))?;
        let op = match kind {
            OpKind::Equal => Op::Equal(value),
            OpKind::NotEqual => Op::NotEqual(value),
            OpKind::Matches => Op::Matches(self.regex(token, value)?),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Option<Vec<String>>, FilterError> {
        let mut path = Some(Vec::new());
        loop {
            let field = self.field()?;
            path = path.zip(field).map(|(mut path, field)| {
                path.push(field);
                path
            });
            if self.sc.peek() != Ch::C('.') {
                return Ok(path);
            }
            self.sc.scan();
        }
    }

    /// A field name; `None` when it is quoted and decodes to non-UTF-8 bytes.
    fn field(&mut self) -> Result<Option<String>, FilterError> {
        let t = self.sc.scan();
        match t.kind {
            Kind::Field => Ok(Some(t.text.to_owned())),
            Kind::Quoted => Ok(String::from_utf8(self.unquote(t, false)?).ok()),
            _ => Err(self.bad_token(t, Expected::Field)),
        }
    }

    fn operator(&mut self) -> Result<OpKind, FilterError> {
        let t = self.sc.scan();
        match (t.kind, t.text) {
            (Kind::Operator, "==") => Ok(OpKind::Equal),
            (Kind::Operator, "!=") => Ok(OpKind::NotEqual),
            (Kind::Operator, "~=") => Ok(OpKind::Matches),
            _ => Err(self.bad_token(t, Expected::Operator)),
        }
    }

    fn value(&mut self, regex: bool) -> Result<(Token<'a>, Vec<u8>), FilterError> {
        let t = self.sc.scan();
        match t.kind {
            Kind::Value | Kind::Field => Ok((t, t.text.as_bytes().to_vec())),
            Kind::Quoted => Ok((t, self.unquote(t, regex)?)),
            _ => Err(self.bad_token(t, Expected::Value)),
        }
    }

    fn regex(&self, t: Token<'_>, value: Vec<u8>) -> Result<Regex, FilterError> {
        let pattern = String::from_utf8_lossy(&value).into_owned();
        let regex = std::str::from_utf8(&value).map_err(|_| "invalid UTF-8".to_owned());
        regex
            .and_then(compile_go_regex)
            .map_err(|reason| FilterError::InvalidRegex {
                filter: self.input.to_owned(),
                position: t.pos,
                pattern,
                reason,
            })
    }

    fn unquote(&self, t: Token<'_>, alt_quotes: bool) -> Result<Vec<u8>, FilterError> {
        if !alt_quotes && !t.text.starts_with('"') {
            return Err(self.malformed(t, Problem::RegexQuote));
        }
        unquote(t.text).ok_or_else(|| self.malformed(t, Problem::EscapeOutOfRange))
    }

    fn malformed(&self, t: Token<'_>, problem: Problem) -> FilterError {
        let (filter, position) = (self.input.to_owned(), t.pos);
        FilterError::Malformed {
            filter,
            position,
            problem,
        }
    }

    fn bad_token(&self, t: Token<'_>, expected: Expected) -> FilterError {
        if t.kind == Kind::Bad {
            return self.malformed(t, self.sc.err.unwrap_or(Problem::UnterminatedQuote));
        }
        let found = (t.kind != Kind::Eof).then(|| t.text.to_owned());
        self.unexpected(t.pos, found, expected)
    }

    fn unexpected(
        &self,
        position: usize,
        found: Option<String>,
        expected: Expected,
    ) -> FilterError {
        FilterError::Unexpected {
            filter: self.input.to_owned(),
            position,
            found,
            expected,
        }
    }
}

/// Decodes a scanned `"..."`, `/.../` or `|...|` literal like Go's `strconv.Unquote`; the result
/// may hold non-UTF-8 bytes from `\x` and octal escapes. `None` when an escape is out of range.
fn unquote(literal: &str) -> Option<Vec<u8>> {
    let quote = literal.chars().next()?;
    let body = literal.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let byte = match chars.next()? {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => b'\n',
            'r' => b'\r',
            't' => b'\t',
            'v' => 0x0b,
            '\\' => b'\\',
            e if e == quote => u8::try_from(e).ok()?,
            'x' => u8::try_from(number(&mut chars, 16, 2, 0)?).ok()?,
            e @ '0'..='7' => u8::try_from(number(&mut chars, 8, 2, e.to_digit(8)?)?).ok()?,
            e @ ('u' | 'U') => {
                let code = number(&mut chars, 16, if e == 'u' { 4 } else { 8 }, 0)?;
                // Go encodes a surrogate code point as U+FFFD.
                let c = (code <= 0x10_ffff).then(|| char::from_u32(code).unwrap_or('\u{FFFD}'))?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(byte);
    }
    Some(out)
}

fn number(chars: &mut std::str::Chars<'_>, radix: u32, digits: usize, start: u32) -> Option<u32> {
    (0..digits).try_fold(start, |acc, _| {
        Some(acc.checked_mul(radix)? + chars.next()?.to_digit(radix)?)
    })
}

// ---- Go RE2 dialect on top of Rust's regex ----

mod goregex;
mod scanner;

use goregex::compile_go_regex;
use scanner::{Ch, Kind, OpKind, Scanner, Token};

#[cfg(test)]
mod tests;
