use super::*;

/// An object whose fields are keyed by their dotted path; unlisted paths are absent. This is
/// how containerd's adaptors see labels: `labels.a.b` and `labels."a.b"` are the same key.
struct Obj<'a>(&'a [(&'a str, &'a str)]);

impl Adaptor for Obj<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let key = path.join(".");
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// containerd's `TestFilters` corpus (`name` and `other` are present when non-empty).
const CORPUS: &[Obj<'static>] = &[
    Obj(&[("name", "foo"), ("labels.foo", "true")]),
    Obj(&[("name", "bar")]),
    Obj(&[
        ("name", "foo"),
        ("labels.foo", "present"),
        ("labels.more complex label", "present"),
    ]),
    Obj(&[("name", "bar"), ("labels.bar", "true")]),
    Obj(&[
        ("name", "fooer"),
        ("labels.more complex label with \\ and \"", "present"),
    ]),
    Obj(&[
        ("name", "fooer"),
        ("labels.more complex label with \\ and \".post", "present"),
    ]),
    Obj(&[("name", "baz"), ("other", "too complex, yo")]),
    Obj(&[("name", "bazo"), ("other", "abc")]),
    Obj(&[("name", "compound"), ("labels.foo", "omg_asdf.asdf-qwer")]),
];

/// Snapshots as containerd's `adaptSnapshot` sees them: `kind`, `name`, `parent` always present.
const SNAPS: &[Obj<'static>] = &[
    Obj(&[
        ("kind", "committed"),
        ("name", "sha256:abc"),
        ("parent", ""),
        ("labels.containerd.io/snapshot.ref", "sha256:abc"),
    ]),
    Obj(&[
        ("kind", "committed"),
        ("name", "sha256:def"),
        ("parent", "sha256:abc"),
        ("labels.containerd.io/snapshot.ref", "sha256:def"),
    ]),
    Obj(&[
        ("kind", "active"),
        ("name", "foo-1"),
        ("parent", "sha256:def"),
        ("labels.containerd.io/gc.root", ""),
        ("labels.a.b", "x"),
    ]),
    Obj(&[("kind", "view"), ("name", "bar"), ("parent", "sha256:abc")]),
];

/// Which objects match, as a string of `0`/`1`.
fn bits(filters: &[&str], corpus: &[Obj<'_>]) -> String {
    let filter = Filter::parse_all(filters).unwrap_or_else(|e| panic!("{filters:?}: {e}"));
    corpus
        .iter()
        .map(|o| if filter.matches(o) { '1' } else { '0' })
        .collect()
}

/// Whether `filter` matches an object with `other` set to `value` and a label `k`.
fn other(filter: &str, value: &str) -> bool {
    bits(&[filter], &[Obj(&[("labels.k", "x"), ("other", value)])]) == "1"
}

/// `"<position> <kind>"` of the error for `filter`.
fn error(filter: &str) -> String {
    let e = Filter::parse_all(&[filter]).expect_err(filter);
    let kind = match &e {
        FilterError::Unexpected {
            found, expected, ..
        } => format!("{expected:?} {found:?}"),
        FilterError::Malformed { problem, .. } => format!("{problem:?}"),
        FilterError::InvalidRegex { .. } => "InvalidRegex".to_owned(),
    };
    format!("{} {kind}", e.position())
}

#[test]
fn containerd_filter_table() {
    let cases = [
        ("", "111111111"),
        ("name", "111111111"),
        ("labels.foo", "101000001"),
        ("labels.foo,name", "101000001"),
        ("labels.foo==true", "100000000"),
        ("labels.foo==omg_asdf.asdf-qwer", "000000001"),
        ("name==bar", "010100000"),
        ("name!=bar", "101011111"),
        ("name==bar,labels.bar", "000100000"),
        (r#"other=="too complex, yo""#, "000000100"),
        ("other~=[abc]+,name!=foo", "000000110"),
        ("other~=/[abc]+/,name!=foo", "000000110"),
        ("other~=/[abc]{1,2}/,name!=foo", "000000110"),
        (r#"other~=/[abc]{0,1}"\//,name!=foo"#, "000000000"),
        ("name==bar,labels.bar==true", "000100000"),
        ("name==bar,labels.bar==wrong", "000000000"),
        (r#"name==foo,labels."more complex label""#, "001000000"),
        (
            r#"labels."more complex label with \\ and \""==present"#,
            "000010000",
        ),
        (
            r#"labels."more complex label with \\ and \"".post==present"#,
            "000001000",
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(bits(&[filter], CORPUS), expected, "{filter}");
    }
}

#[test]
fn containerd_parse_error_table() {
    let cases = [
        ("labels.|foo|==omg_asdf.asdf-qwer", "7 RegexQuote"),
        (
            r#"labels.?"more \\ and \"".post==present"#,
            r#"7 Field Some("?")"#,
        ),
        ("name==foo,", "10 Field None"),
        ("labels.", "7 Field None"),
        ("image~=,id?=?fbaq", r#"7 Value Some(",")"#),
        ("labels.ns/key==value", "9 UnterminatedQuote"),
        ("labels.key==/value", "12 UnterminatedQuote"),
    ];
    for (filter, expected) in cases {
        assert_eq!(error(filter), expected, "{filter}");
    }
}

#[test]
fn error_messages_are_actionable() {
    let shown = |f: &str| Filter::parse_all(&[f]).expect_err(f).to_string();
    assert_eq!(
        shown("labels.a=b"),
        r#"invalid filter "labels.a=b": unexpected "=" at position 8, expected one of "==", "!=", "~=""#
    );
    assert_eq!(
        shown("name==a,"),
        r#"invalid filter "name==a,": unexpected end of input at position 8, expected a field name ([A-Za-z0-9_]+) or a "double-quoted" field name"#
    );
    assert!(shown("labels.containerd.io/gc.root").contains("unterminated quoted string"));
    assert!(
        shown("name~=(").starts_with(
            r#"invalid filter "name~=(": invalid regular expression "(" at position 6"#
        )
    );
    assert!(shown("name==/x/").contains("quotes are only allowed after"));
    assert_eq!(
        shown("name~=(a"),
        r#"invalid filter "name~=(a": invalid regular expression "(a" at position 6: unclosed group"#
    );
}

/// containerd's scanner table; `␀` stands for NUL and `⏎` for a newline.
const SCANS: &str = r#"
name => 0:Field:name 4:Eof:
name==value,foo!=bar => 0:Field:name 4:Operator:== 6:Value:value 11:Separator:, 12:Field:foo 15:Operator:!= 17:Value:bar 20:Eof:
l.foo=value,o~=m => 0:Field:l 1:Separator:. 2:Field:foo 5:Operator:= 6:Value:value 11:Separator:, 12:Field:o 13:Operator:~= 15:Value:m 16:Eof:
name~=[abc]\+,f=t => 0:Field:name 4:Operator:~= 6:Value:[abc]\+ 13:Separator:, 14:Field:f 15:Operator:= 16:Value:t 17:Eof:
name~=/[abc]{0,2}/,f=t => 0:Field:name 4:Operator:~= 6:Quoted:/[abc]{0,2}/ 18:Separator:, 19:Field:f 20:Operator:= 21:Value:t 22:Eof:
name~=牛,l.m=t => 0:Field:name 4:Operator:~= 6:Value:牛 9:Separator:, 10:Field:l 11:Separator:. 12:Field:m 13:Operator:= 14:Value:t 15:Eof:
name~=|牛| => 0:Field:name 4:Operator:~= 6:Quoted:|牛| 11:Eof:
name~="asdf\n\tfooo" => 0:Field:name 4:Operator:~= 6:Quoted:"asdf\n\tfooo" 20:Eof:
foo␀bar => 0:Field:foo 3:Bad:NulCharacter 4:Field:bar 7:Eof:
foo = bar     => 0:Field:foo 4:Operator:= 6:Value:bar 13:Eof:
c.l==punctuated_value.foo-bar => 0:Field:c 1:Separator:. 2:Field:l 3:Operator:== 5:Value:punctuated_value.foo-bar 29:Eof:
interrupted= => 0:Field:interrupted 11:Operator:= 12:Eof:
d=value value => 0:Field:d 1:Operator:= 2:Value:value 8:Field:value 13:Eof:
"leading quote".p==v => 0:Quoted:"leading quote" 15:Separator:. 16:Field:p 17:Operator:== 19:Value:v 20:Eof:
input==,id!=ff => 0:Field:input 5:Operator:== 7:Separator:, 8:Field:id 10:Operator:!= 12:Value:ff 14:Eof:
i~=/foo\/bar/ => 0:Field:i 1:Operator:~= 3:Quoted:/foo\/bar/ 13:Eof:
l.containerd.io/key==value => 0:Field:l 1:Separator:. 2:Field:containerd 12:Separator:. 13:Field:io 15:Bad:UnterminatedQuote 26:Eof:
l."c.io⏎key"==v => 0:Field:l 1:Separator:. 2:Bad:UnterminatedQuote 8:Field:key 11:Bad:UnterminatedQuote 15:Eof:
l."\g" => 0:Field:l 1:Separator:. 2:Bad:IllegalEscape 6:Eof:
l."\xaz" => 0:Field:l 1:Separator:. 2:Bad:IllegalNumericEscape 8:Eof:
"#;

#[test]
fn scanner_tokens() {
    for case in SCANS.lines().filter(|l| !l.is_empty()) {
        let (input, expected) = case.split_once(" => ").unwrap();
        let input = input.replace('␀', "\0").replace('⏎', "\n");
        let mut sc = Scanner::new(&input);
        let mut seen = Vec::new();
        loop {
            let t = sc.scan();
            let text = match t.kind {
                Kind::Bad => format!("{:?}", sc.err.unwrap()),
                _ => t.text.to_owned(),
            };
            seen.push(format!("{}:{:?}:{text}", t.pos, t.kind));
            if t.kind == Kind::Eof {
                break;
            }
        }
        assert_eq!(seen.join(" "), expected, "{input:?}");
    }
}

#[test]
fn snapshot_filters() {
    let cases: [(&[&str], &str); 17] = [
        (&["kind==committed"], "1100"),
        (&[r#"parent=="""#], "1000"),
        (
            &[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="""#],
            "1000",
        ),
        (
            &[r#"labels."containerd.io/snapshot.ref"==sha256:def,parent==sha256:abc"#],
            "0100",
        ),
        (&["name~=^foo"], "0010"),
        (&["name~=/^sha256:[a-f]+$/"], "1100"),
        (&[r#"labels."containerd.io/gc.root""#], "0010"),
        (&[r#"labels."containerd.io/gc.root"=="""#], "0010"),
        (&["kind==view", "kind==active"], "0011"),
        (&["kind==view", "name==sha256:abc,kind==committed"], "1001"),
        (&[r#"labels."a.b"==x"#], "0010"),
        (&["labels.a.b==x"], "0010"),
        (&["kind == active"], "0010"),
        (&["parent"], "1111"),
        (&["size", "labels"], "0000"),
        (&[], "1111"),
        (&["", "kind==view"], "1111"),
    ];
    for (filters, expected) in cases {
        assert_eq!(bits(filters, SNAPS), expected, "{filters:?}");
    }
}

#[test]
fn containerd_quirks() {
    // `!=` and `~=` look at "" when the field is absent.
    assert_eq!(bits(&["labels.a.b!=y"], SNAPS), "1111");
    assert_eq!(bits(&[r#"labels.a.b!="""#], SNAPS), "0010");
    assert_eq!(bits(&["labels.a.b~=^$"], SNAPS), "1101");
    // Backquotes and single quotes are plain characters; values may hold `=`, `"`, `/`, `|`.
    assert_eq!(bits(&["name==`bar`", "name=='bar'"], SNAPS), "0000");
    assert!(other(r#"other==a=b"/|c"#, r#"a=b"/|c"#));
    let cases = [
        (" ", "1 Field None"),
        ("name ,kind", r#"5 Operator Some(",")"#),
        ("name==a ,kind", r#"7 CommaOrEnd Some(" ")"#),
        ("name==|x|", "6 RegexQuote"),
        ("labels.`a`", r#"7 Field Some("`")"#),
        ("name==.x", r#"6 Value Some(".")"#),
        ("name===x", r#"4 Operator Some("===")"#),
    ];
    for (filter, expected) in cases {
        assert_eq!(error(filter), expected, "{filter:?}");
    }
}

#[test]
fn quoted_strings_and_escapes() {
    assert!(other(
        r#"other=="\x41\101\u00e9\U0001F600\a\"""#,
        "AAé😀\u{7}\""
    ));
    assert!(
        other(r#"other=="\ud800""#, "\u{FFFD}"),
        "a surrogate becomes U+FFFD"
    );
    assert!(
        other(r#"other=="\xc3\xa9""#, "é"),
        "escaped bytes form UTF-8"
    );
    assert!(other(r#"other!="\xff""#, "x"), "non-UTF-8 equals nothing");
    assert!(other(r#"labels."\x6b""#, "x"));
    assert!(
        !other(r#"labels."\xff""#, "x"),
        "a non-UTF-8 path is absent"
    );
    let cases = [
        (r#"a=="\400""#, "3 EscapeOutOfRange"),
        (r#"a=="\U00110000""#, "3 EscapeOutOfRange"),
        (r#"a=="\'""#, "3 IllegalEscape"),
        (r"a~=/\d/", "3 IllegalEscape"),
        ("a==\"\0\"", "3 NulCharacter"),
        ("a==b\u{FFFD}", "4 CommaOrEnd Some(\"\u{FFFD}\")"),
        ("\u{FFFD}", "0 ReplacementCharacter"),
    ];
    for (filter, expected) in cases {
        assert_eq!(error(filter), expected, "{filter:?}");
    }
}

#[test]
fn regular_expressions_follow_go() {
    assert!(!other(r"other~=^\d+$", "٣"), "\\d is ASCII in Go");
    assert!(!other(r"other~=^\w\s\b", "é "));
    assert!(other(r#"other~="^a{,2}[[&&~]+\\Q.*\\E$""#, "a{,2}&[~.*"));
    assert!(other(
        r#"other~="^[+--]\\101\\x{42}[[:^alpha:]]k(?i)?$""#,
        ",AB1"
    ));
    assert!(other("other~=(?i)É", "é"));
    for filter in [
        "name~=(foo",
        r"a~=\u0041",
        "a~=(?x)a",
        "a~=a**",
        "a~=a{1001}",
        "a~=[[:foo:]]",
    ] {
        assert!(error(filter).ends_with(" InvalidRegex"), "{filter}");
    }
    assert_eq!(error(r#"a~="\xff""#), "3 InvalidRegex");
}

#[test]
fn work_stays_linear() {
    for unit in ["{", "[[:", r"\p{", r"\Q\E", r"\x{", "(?", "a", r"\\"] {
        let filter = format!("name~=\"{}\"", unit.replace('\\', r"\\").repeat(100_000));
        let start = std::time::Instant::now();
        let _ = Filter::parse_all(&[filter]);
        assert!(start.elapsed().as_secs() < 10, "{unit}");
    }
}

#[test]
fn garbage_never_panics() {
    let words = r#"name labels kind . , == != ~= = ! ~ " / | \ \x \u \U \0 \377 x é 牛 [ ] ( ? * { } {1,2} {,2} \d \b \Q \E (?i) [:alpha:] && ` a.b"#;
    let pieces: Vec<&str> = words
        .split(' ')
        .chain([" ", "\n", "\0", "\u{FFFD}", "\u{200B}"])
        .collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    for _ in 0..20_000 {
        let mut piece = || match next(4) {
            0 => char::from_u32(u32::try_from(next(0x11_0000)).unwrap())
                .unwrap_or('?')
                .to_string(),
            _ => pieces[next(pieces.len())].to_owned(),
        };
        let strings: Vec<String> = (0..3).map(|_| (0..8).map(|_| piece()).collect()).collect();
        match Filter::parse_all(&strings[..next(4)]) {
            Ok(filter) => SNAPS
                .iter()
                .chain(CORPUS)
                .for_each(|o| _ = filter.matches(o)),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert!(
                    strings.iter().any(|s| s.is_char_boundary(e.position())),
                    "{e}"
                );
            }
        }
    }
}
