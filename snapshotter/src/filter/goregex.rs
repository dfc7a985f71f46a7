//! Go's RE2 regular-expression dialect, rewritten for Rust's `regex` so `~=` matches exactly
//! as containerd's would.

use super::*;

/// Compiles a Go (RE2) regular expression by rewriting it into the same language for Rust's
/// `regex`: `\d \s \w \b` and their negations are ASCII-only, `\Q...\E` is literal, `{` that does
/// not start a repeat is literal, inside `[...]` a `[`, `&`, `~` or `-` that Go reads literally
/// stays literal, and what Go rejects (`\u`, `(?x)`, `a**`, repeats above 1000) is rejected.
pub(super) fn compile_go_regex(pattern: &str) -> Result<Regex, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let last_named_close = cs.windows(2).rposition(|w| w == [':', ']']);
    let mut t = GoRegex {
        cs,
        i: 0,
        out: String::new(),
        last_named_close,
    };
    t.top_level()?;
    // The last line of a syntax error is the message; the lines above it repeat the pattern.
    Regex::new(&t.out).map_err(|e| {
        let e = e.to_string();
        e.lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()
    })
}

pub(super) struct GoRegex {
    pub(super) cs: Vec<char>,
    pub(super) i: usize,
    pub(super) out: String,
    /// Index of the last `:]`, so that `[:` needs no long search (keeps the work linear).
    pub(super) last_named_close: Option<usize>,
}

impl GoRegex {
    pub(super) fn peek(&self, ahead: usize) -> Option<char> {
        self.cs.get(self.i + ahead).copied()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        Some(c)
    }

    /// Translates outside brackets. Go applies a repeat that follows a flag group such as `(?i)`
    /// to the atom before the group, so such groups are emitted after that repeat.
    pub(super) fn top_level(&mut self) -> Result<(), String> {
        let (mut last_repeat, mut flags) = (false, String::new());
        while let Some(c) = self.bump() {
            if c == '(' && self.peek(0) == Some('?') && self.flag_group(&mut flags)? {
                continue;
            }
            let repeat = matches!(c, '*' | '+' | '?') || (c == '{' && self.repeat_len().is_some());
            if repeat && last_repeat {
                // Go rejects `a**`, but accepts `a*(?i)*`, which has no equivalent here.
                let what = if flags.is_empty() {
                    "invalid"
                } else {
                    "unsupported"
                };
                return Err(format!(
                    "{what} nested repetition operator at character {}",
                    self.i
                ));
            }
            if !repeat {
                self.out.push_str(&std::mem::take(&mut flags));
            }
            match c {
                '\\' => self.escape(false)?,
                '[' => self.class()?,
                '{' if repeat => self.repeat()?,
                '{' => self.out.push_str(r"\{"),
                _ => self.out.push(c),
            }
            if repeat && self.peek(0) == Some('?') {
                self.out.push('?');
                self.i += 1;
            }
            self.out.push_str(&std::mem::take(&mut flags));
            last_repeat = repeat;
        }
        self.out.push_str(&flags);
        Ok(())
    }

    /// Checks the flags of a `(?` group; a flags-only group `(?flags)` is consumed into `pending`.
    pub(super) fn flag_group(&mut self, pending: &mut String) -> Result<bool, String> {
        let flags: String = self
            .cs
            .iter()
            .skip(self.i + 1)
            .take_while(|&&c| c.is_ascii_alphabetic() || c == '-')
            .collect();
        if !flags.starts_with('P') && flags.chars().any(|f| !"imsU-".contains(f)) {
            return Err(format!("invalid or unsupported Perl syntax: (?{flags}"));
        }
        let only_flags = self.peek(flags.len() + 1) == Some(')');
        if only_flags {
            pending.push_str(&format!("(?{flags})"));
            self.i += flags.len() + 2;
        }
        Ok(only_flags)
    }

    /// Length of a Go repeat `{n}`, `{n,}` or `{n,m}` whose `{` was just read.
    pub(super) fn repeat_len(&self) -> Option<usize> {
        let rest = self.cs.get(self.i..)?;
        let len = rest
            .iter()
            .take_while(|&&c| c.is_ascii_digit() || c == ',')
            .count();
        let body: String = rest.get(..len)?.iter().collect();
        let (min, max) = body.split_once(',').unwrap_or((&body, ""));
        let valid = rest.get(len) == Some(&'}') && !min.is_empty() && !max.contains(',');
        valid.then_some(len + 1)
    }

    pub(super) fn repeat(&mut self) -> Result<(), String> {
        let len = self.repeat_len().unwrap_or(0);
        let body: String = self.cs.iter().skip(self.i).take(len).collect();
        if body
            .trim_end_matches('}')
            .split(',')
            .any(|n| n.parse::<u32>().is_ok_and(|n| n > 1000))
        {
            return Err(format!("invalid repeat count {{{body}"));
        }
        self.out.push('{');
        self.out.push_str(&body);
        self.i += len;
        Ok(())
    }

    /// Translates a bracketed class whose `[` was just read, item by item as Go's `parseClass`.
    pub(super) fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.peek(0) == Some('^') {
            self.out.push('^');
            self.i += 1;
        }
        let mut first = true;
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return Err("missing closing ]".to_owned()),
                (Some(']'), _) if !first => break,
                (Some('\\'), Some('d' | 'D' | 's' | 'S' | 'w' | 'W' | 'p' | 'P')) => {
                    self.i += 1;
                    self.escape(true)?;
                }
                (Some('['), Some(':')) if self.named_class()? => {}
                _ => {
                    self.class_char()?;
                    if self.peek(0) == Some('-') && !matches!(self.peek(1), None | Some(']')) {
                        self.out.push('-');
                        self.i += 1;
                        self.class_char()?;
                    }
                }
            }
            first = false;
        }
        self.out.push(']');
        self.i += 1;
        Ok(())
    }

    /// Copies `[:name:]` (Go looks for the next `:]`); `Ok(false)` when there is none.
    pub(super) fn named_class(&mut self) -> Result<bool, String> {
        const NAMES: &str =
            "alnum alpha ascii blank cntrl digit graph lower print punct space upper word xdigit";
        // Valid names are short: look nearby, then only ask whether any `:]` follows at all.
        let rest = self.cs.get(self.i + 2..).unwrap_or_default();
        let near = rest.get(..12).unwrap_or(rest);
        let Some(end) = near.windows(2).position(|w| w == [':', ']']) else {
            if self.last_named_close.is_some_and(|last| last >= self.i + 2) {
                return Err("invalid character class range: [:...:]".to_owned());
            }
            return Ok(false);
        };
        let name: String = rest.iter().take(end).collect();
        if !NAMES
            .split(' ')
            .any(|n| n == name.strip_prefix('^').unwrap_or(&name))
        {
            return Err(format!("invalid character class range: [:{name}:]"));
        }
        self.out.push_str(&format!("[:{name}:]"));
        self.i += end + 4;
        Ok(true)
    }

    pub(super) fn class_char(&mut self) -> Result<(), String> {
        let code = match self.bump() {
            Some('\\') => self.escaped_char()?,
            Some(c) => u32::from(c),
            None => return Err("missing closing ]".to_owned()),
        };
        self.out.push_str(&format!(r"\x{{{code:x}}}"));
        Ok(())
    }

    /// Translates the escape whose `\` was just read.
    pub(super) fn escape(&mut self, in_class: bool) -> Result<(), String> {
        let set = match self.peek(0).map(|e| e.to_ascii_lowercase()) {
            Some('d') => "0-9",
            Some('s') => r"\t\n\f\r\x20",
            Some('w') => "0-9A-Za-z_",
            _ => "",
        };
        match self.peek(0) {
            Some('d' | 's' | 'w') if in_class => self.out.push_str(set),
            Some('d' | 's' | 'w') => self.out.push_str(&format!("[{set}]")),
            Some('D' | 'S' | 'W') => self.out.push_str(&format!("[^{set}]")),
            Some(p @ ('p' | 'P')) => self.unicode_class(p),
            Some(b @ ('b' | 'B')) if !in_class => self.out.push_str(&format!(r"(?-u:\{b})")),
            Some(a @ ('A' | 'z')) if !in_class => self.out.push_str(&format!(r"\{a}")),
            Some('Q') if !in_class => self.quoted_literal(),
            _ => {
                let code = self.escaped_char()?;
                self.out.push_str(&format!(r"\x{{{code:x}}}"));
                return Ok(());
            }
        }
        self.i += 1;
        Ok(())
    }

    /// Copies `\pL` or `\p{Name}` whose `p` is at `i` (leaving `i` on its last character).
    pub(super) fn unicode_class(&mut self, p: char) {
        let rest = self.cs.get(self.i + 1..).unwrap_or_default();
        let name = |&&c: &&char| c.is_ascii_alphanumeric() || "_=^ -".contains(c);
        let len = match rest.first() {
            Some('{') => rest.iter().skip(1).take_while(name).count() + 2,
            _ => 1,
        };
        self.out.push('\\');
        self.out.push(p);
        self.out.extend(rest.iter().take(len));
        self.i += len.min(rest.len());
    }

    /// Escapes the text of `\Q...\E` (or `\Q...` to the end) whose `Q` is at `i` (leaving `i`
    /// on its last character).
    pub(super) fn quoted_literal(&mut self) {
        let rest = self.cs.get(self.i + 1..).unwrap_or_default();
        let end = rest.windows(2).position(|w| w == ['\\', 'E']);
        let literal: String = rest.iter().take(end.unwrap_or(rest.len())).collect();
        self.out.push_str(&regex::escape(&literal));
        self.i += end.map_or(rest.len(), |end| end + 2);
    }

    /// Decodes a character escape (octal, `\x`, `\a\f\n\r\t\v`, punctuation) after its `\`.
    pub(super) fn escaped_char(&mut self) -> Result<u32, String> {
        let octal = |c: Option<char>| c.and_then(|c| c.to_digit(8));
        let invalid = |e: Option<char>| format!("invalid escape sequence: \\{}", e.unwrap_or(' '));
        let e = self.bump();
        Ok(match e {
            Some('0') | Some('1'..='7') if e == Some('0') || octal(self.peek(0)).is_some() => {
                let mut code = octal(e).unwrap_or(0);
                for _ in 0..2 {
                    let Some(d) = octal(self.peek(0)) else { break };
                    code = code * 8 + d;
                    self.i += 1;
                }
                code
            }
            Some('x') => self.hex_escape().ok_or_else(|| invalid(e))?,
            Some('a') => 7,
            Some('f') => 12,
            Some('n') => 10,
            Some('r') => 13,
            Some('t') => 9,
            Some('v') => 11,
            Some(c) if c.is_ascii() && !c.is_ascii_alphanumeric() => u32::from(c),
            _ => return Err(invalid(e)),
        })
    }

    /// Decodes `\xhh` or `\x{h...}` after its `x`.
    pub(super) fn hex_escape(&mut self) -> Option<u32> {
        let rest = self.cs.get(self.i..)?;
        let (digits, len) = if rest.first() == Some(&'{') {
            let n = rest
                .iter()
                .skip(1)
                .take_while(|c| c.is_ascii_hexdigit())
                .count();
            (
                rest.get(1..=n).filter(|_| rest.get(n + 1) == Some(&'}'))?,
                n + 2,
            )
        } else {
            (rest.get(..2)?, 2)
        };
        let code = digits
            .iter()
            .try_fold(0u32, |acc, c| {
                acc.checked_mul(16)?.checked_add(c.to_digit(16)?)
            })
            .filter(|&c| c <= 0x10_ffff && !digits.is_empty())?;
        self.i += len;
        Some(code)
    }
}
