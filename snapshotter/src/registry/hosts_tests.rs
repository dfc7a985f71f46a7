use super::*;

fn parse_ok(text: &str) -> Vec<HostSpec> {
    parse(Path::new("/cfg/m/hosts.toml"), Path::new("/cfg/m"), text)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    match parse(Path::new("/cfg/m/hosts.toml"), Path::new("/cfg/m"), text) {
        Ok(specs) => panic!("accepted: {specs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn containerd_docs_example() {
    // The mirror example from containerd's docs/hosts.md, plus a header and a ca list.
    let specs = parse_ok(
        r#"
server = "https://registry-1.docker.io"

[host."https://z.mirror:5000"]
  capabilities = ["pull", "resolve"]
  ca = ["ca.pem", "/abs/other.pem"]

[host."http://a.mirror"]
  capabilities = ["pull"]
  skip_verify = true
  [host."http://a.mirror".header]
    x-custom = "1"
    x-multi = ["a", "b"]
"#,
    );
    let hosts: Vec<(&str, &str, &str)> = specs
        .iter()
        .map(|s| (s.scheme.as_str(), s.host.as_str(), s.path.as_str()))
        .collect();
    // File order, not alphabetical ("z" before "a"), server last.
    assert_eq!(
        hosts,
        [
            ("https", "z.mirror:5000", "/v2"),
            ("http", "a.mirror", "/v2"),
            ("https", "registry-1.docker.io", "/v2"),
        ]
    );
    assert_eq!(
        specs[0].caps,
        Caps {
            pull: true,
            resolve: true,
            push: false
        }
    );
    assert_eq!(
        specs[0].ca,
        [
            PathBuf::from("/cfg/m/ca.pem"),
            PathBuf::from("/abs/other.pem")
        ]
    );
    assert!(specs[1].skip_verify && !specs[0].skip_verify);
    assert_eq!(
        specs[1].headers,
        [
            ("x-custom".to_owned(), "1".to_owned()),
            ("x-multi".to_owned(), "a".to_owned()),
            ("x-multi".to_owned(), "b".to_owned()),
        ]
    );
    assert_eq!(specs[2].caps, Caps::ALL);
    assert_eq!(specs[0].key, "host.\"https://z.mirror:5000\"");
}

#[test]
fn without_server_the_last_entry_is_the_registry_itself() {
    let specs = parse_ok("ca = \"root.pem\"\n[host.\"https://m\"]\n");
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[1].host, "", "empty host = the registry itself");
    assert_eq!(specs[1].ca, [PathBuf::from("/cfg/m/root.pem")]);
}

#[test]
fn paths_and_override_path() {
    let specs = parse_ok(
        r#"
[host."https://m1/prefix"]
[host."https://m2/prefix/v2/"]
[host."https://m3/custom/api"]
  override_path = true
[host."m4:8443"]
"#,
    );
    let got: Vec<(&str, &str)> = specs
        .iter()
        .map(|s| (s.host.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        got[..4],
        [
            ("m1", "/prefix/v2"),
            ("m2", "/prefix/v2"),
            ("m3", "/custom/api"),
            ("m4:8443", "/v2"),
        ]
    );
    assert_eq!(specs[3].scheme, "https", "no scheme means https");
}

#[test]
fn client_pairs_in_all_three_shapes() {
    let specs = parse_ok(
        r#"
[host."https://a"]
  client = "both.pem"
[host."https://b"]
  client = ["one.pem", ["c.pem", "/k.pem"]]
"#,
    );
    assert_eq!(specs[0].client, [(PathBuf::from("/cfg/m/both.pem"), None)]);
    assert_eq!(
        specs[1].client,
        [
            (PathBuf::from("/cfg/m/one.pem"), None),
            (PathBuf::from("/cfg/m/c.pem"), Some(PathBuf::from("/k.pem"))),
        ]
    );
}

#[test]
fn errors_name_the_file_and_key() {
    let e = parse_err("[host.\"https://m\"]\ncapabilities = [\"pull\", \"fetch\"]\n");
    assert!(
        e.starts_with(
            "/cfg/m/hosts.toml: host.\"https://m\".capabilities: unknown capability \"fetch\""
        ),
        "{e}"
    );
    let e = parse_err("server = 5\n");
    assert!(e.contains("hosts.toml: server: must be a string"), "{e}");
    let e = parse_err("[host.\"https://m\"]\nskip_verify = \"yes\"\n");
    assert!(e.contains("skip_verify: must be true or false"), "{e}");
    let e = parse_err("[host.\"https://m\"]\nclient = [[\"only-one\"]]\n");
    assert!(e.contains("client: must be"), "{e}");
    let e = parse_err("server = \"ftp://x\"\n");
    assert!(
        e.contains("server: \"ftp://x\": only http:// and https://"),
        "{e}"
    );
    let e = parse_err("server = [\n");
    assert!(e.contains("not valid TOML"), "{e}");
}

#[test]
fn unknown_keys_are_ignored() {
    let specs = parse_ok("[host.\"https://m\"]\ndial_timeout = \"5s\"\n");
    assert_eq!(specs[0].host, "m");
}

#[test]
fn plain_http_rules() {
    let insecure = ["reg.lan:5000".to_owned(), "any-port.lan".to_owned()];
    for ok in [
        "127.0.0.1:5000",
        "127.1.2.3",
        "localhost:5000",
        "LOCALHOST",
        "[::1]:5000",
        "::1",
        "reg.lan:5000",
        "any-port.lan",
        "any-port.lan:1234",
    ] {
        assert!(plain_http_allowed(ok, &insecure), "{ok} refused");
    }
    for no in [
        "reg.lan",
        "reg.lan:5001",
        "10.0.0.1:5000",
        "registry-1.docker.io",
        "[::2]:5000",
        "localhost.evil.com",
    ] {
        assert!(!plain_http_allowed(no, &insecure), "{no} allowed");
    }
}

#[test]
fn directory_lookup_follows_containerd_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    assert_eq!(host_dir(r, "reg:5000").ok(), Some(None));
    std::fs::create_dir(r.join("_default")).expect("mkdir");
    assert_eq!(host_dir(r, "reg:5000").ok(), Some(Some(r.join("_default"))));
    std::fs::create_dir(r.join("reg:5000")).expect("mkdir");
    assert_eq!(host_dir(r, "reg:5000").ok(), Some(Some(r.join("reg:5000"))));
    std::fs::create_dir(r.join("reg_5000_")).expect("mkdir");
    assert_eq!(
        host_dir(r, "reg:5000").ok(),
        Some(Some(r.join("reg_5000_")))
    );
    assert_eq!(host_dir(r, "other").ok(), Some(Some(r.join("_default"))));
}

#[test]
fn directory_without_hosts_toml_uses_docker_cert_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("reg:5000");
    std::fs::create_dir(&dir).expect("mkdir");
    for f in ["ca.crt", "me.cert", "me.key", "lone.cert", "notes.txt"] {
        std::fs::write(dir.join(f), "x").expect("write");
    }
    let specs = load(root.path(), "reg:5000")
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("configured");
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].host, "");
    assert_eq!(specs[0].ca, [dir.join("ca.crt")]);
    assert_eq!(
        specs[0].client,
        [
            (dir.join("lone.cert"), None),
            (dir.join("me.cert"), Some(dir.join("me.key"))),
        ]
    );
}
