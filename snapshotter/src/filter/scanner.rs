//! The tokenizer: containerd's `filters/scanner.go`.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ch {
    Eof,
    Bad(char),
    C(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Eof,
    Bad,
    Quoted,
    Separator,
    Operator,
    Value,
    Field,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub(super) pos: usize,
    pub(super) kind: Kind,
    pub(super) text: &'a str,
}

#[derive(Debug)]
pub(super) struct Scanner<'a> {
    pub(super) input: &'a str,
    /// Start of the last rune read; `ppos` is its end.
    pub(super) pos: usize,
    pub(super) ppos: usize,
    /// Set after an operator: the next unquoted token is a value.
    pub(super) value: bool,
    /// First problem seen (containerd reports the first one).
    pub(super) err: Option<Problem>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(input: &'a str) -> Self {
        Scanner {
            input,
            pos: 0,
            ppos: 0,
            value: false,
            err: None,
        }
    }

    pub(super) fn error(&mut self, problem: Problem) {
        self.err.get_or_insert(problem);
    }

    pub(super) fn next(&mut self) -> Ch {
        self.pos = self.ppos;
        let Some(c) = self.input.get(self.ppos..).and_then(|s| s.chars().next()) else {
            return Ch::Eof;
        };
        self.ppos += c.len_utf8();
        match c {
            '\0' => self.error(Problem::NulCharacter),
            '\u{FFFD}' => self.error(Problem::ReplacementCharacter),
            _ => return Ch::C(c),
        }
        Ch::Bad(c)
    }

    pub(super) fn peek(&mut self) -> Ch {
        let saved = (self.pos, self.ppos);
        let ch = self.next();
        (self.pos, self.ppos) = saved;
        ch
    }

    pub(super) fn skip_while(&mut self, pred: fn(char) -> bool) {
        while matches!(self.peek(), Ch::C(c) if pred(c)) {
            self.next();
        }
    }

    pub(super) fn scan(&mut self) -> Token<'a> {
        let mut ch = self.next();
        while matches!(ch, Ch::C(c) if c.is_whitespace()) {
            ch = self.next();
        }
        let pos = self.pos;
        let kind = match ch {
            Ch::Eof => Kind::Eof,
            Ch::Bad(_) => Kind::Bad,
            Ch::C(c) => self.classify(c),
        };
        Token {
            pos,
            kind,
            text: self.input.get(pos..self.ppos).unwrap_or_default(),
        }
    }

    pub(super) fn classify(&mut self, c: char) -> Kind {
        if matches!(c, '"' | '/' | '|') {
            return if self.scan_quoted(c) {
                Kind::Quoted
            } else {
                Kind::Bad
            };
        }
        if matches!(c, ',' | '.') {
            self.value = false;
            return Kind::Separator;
        }
        if is_operator_char(c) {
            self.skip_while(is_operator_char);
            self.value = true;
            return Kind::Operator;
        }
        if self.value {
            self.skip_while(is_value_char);
            self.value = false;
            return Kind::Value;
        }
        if is_field_char(c) {
            self.skip_while(is_field_char);
            return Kind::Field;
        }
        Kind::Other
    }

    /// Consumes a quoted literal up to the closing `quote`; false if it is malformed.
    pub(super) fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        let mut ch = self.next();
        loop {
            match ch {
                Ch::C(c) if c == quote => return legal,
                Ch::C('\n') | Ch::Eof | Ch::Bad(_) => {
                    self.error(Problem::UnterminatedQuote);
                    return false;
                }
                Ch::C('\\') => {
                    let ok;
                    (ch, ok) = self.scan_escape(quote);
                    legal &= ok;
                }
                Ch::C(_) => ch = self.next(),
            }
        }
    }

    /// Consumes an escape after `\`; returns the rune after it and whether it was legal.
    pub(super) fn scan_escape(&mut self, quote: char) -> (Ch, bool) {
        let ch = self.next();
        let digits = match ch {
            Ch::C('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => return (self.next(), true),
            Ch::C(c) if c == quote => return (self.next(), true),
            Ch::C('0'..='7') => return self.scan_digits(ch, 8, 3),
            Ch::C('x') => 2,
            Ch::C('u') => 4,
            Ch::C('U') => 8,
            _ => {
                self.error(Problem::IllegalEscape);
                return (ch, false);
            }
        };
        let first = self.next();
        self.scan_digits(first, 16, digits)
    }

    pub(super) fn scan_digits(&mut self, mut ch: Ch, base: u32, mut n: u32) -> (Ch, bool) {
        while n > 0 && matches!(ch, Ch::C(c) if c.to_digit(16).is_some_and(|d| d < base)) {
            ch = self.next();
            n -= 1;
        }
        if n > 0 {
            self.error(Problem::IllegalNumericEscape);
        }
        (ch, n == 0)
    }
}

pub(super) fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

pub(super) fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Go's `isValueRune`: a graphic (`unicode.IsGraphic`) non-space rune other than `,`.
pub(super) fn is_value_char(c: char) -> bool {
    static OTHER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\p{C}").ok());
    let non_graphic = match OTHER.as_ref() {
        Some(re) => re.is_match(c.encode_utf8(&mut [0; 4])),
        None => c.is_control(),
    };
    c != ',' && !c.is_whitespace() && !non_graphic
}

// ---- parser (containerd's parser.go and quote.go) ----

pub(super) enum OpKind {
    Equal,
    NotEqual,
    Matches,
}
