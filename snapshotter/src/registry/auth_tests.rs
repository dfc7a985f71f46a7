use super::*;

#[test]
fn parses_bearer_and_basic_challenges() {
    let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
    assert_eq!(
        parse_challenges(v),
        [Challenge::Bearer {
            realm: "https://auth.docker.io/token".to_owned(),
            service: Some("registry.docker.io".to_owned()),
        }]
    );
    assert_eq!(
        parse_challenges(r#"Basic realm="Registry Realm""#),
        [Challenge::Basic]
    );
    // Several challenges, odd spacing, unquoted values, an escaped quote, an unknown scheme.
    let v = r#"Negotiate abc, basic realm=x , BEARER realm="http://t/\"tok\"", service=svc"#;
    assert_eq!(
        parse_challenges(v),
        [
            Challenge::Basic,
            Challenge::Bearer {
                realm: "http://t/\"tok\"".to_owned(),
                service: Some("svc".to_owned()),
            }
        ]
    );
    // A bearer challenge without a realm is useless and dropped.
    assert_eq!(parse_challenges("Bearer service=x"), []);
}

#[test]
fn config_dir_precedence() {
    let explicit = Path::new("/etc/augur/docker");
    assert_eq!(
        docker_config_dir(Some(explicit), Some("/env".into()), Some("/home/u".into())),
        Some(explicit.to_path_buf())
    );
    assert_eq!(
        docker_config_dir(None, Some("/env".into()), Some("/home/u".into())),
        Some(PathBuf::from("/env"))
    );
    assert_eq!(
        docker_config_dir(None, None, Some("/home/u".into())),
        Some(PathBuf::from("/home/u/.docker"))
    );
    assert_eq!(docker_config_dir(None, None, None), None);
}

#[test]
fn looks_up_credentials_in_a_temp_docker_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
    let json = format!(
        r#"{{"auths": {{
            "127.0.0.1:5000": {{"auth": "{auth}"}},
            "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}},
            "tok.example": {{"identitytoken": "refresh-me"}}
        }}}}"#
    );
    std::fs::write(dir.path().join("config.json"), json).expect("write");
    let found = lookup(Some(dir.path()), "127.0.0.1:5000");
    assert_eq!(
        found.credential,
        Some(Credential::Basic {
            username: "bob".to_owned(),
            password: "s3cret".to_owned()
        })
    );
    assert!(
        found.source.starts_with("user \"bob\" from "),
        "{}",
        found.source
    );
    assert!(
        !format!("{:?}", found.credential).contains("s3cret"),
        "Debug leaks the password"
    );

    let hub = lookup(Some(dir.path()), "docker.io");
    assert!(
        matches!(hub.credential, Some(Credential::Basic { ref username, .. }) if username == "hub")
    );
    let tok = lookup(Some(dir.path()), "tok.example");
    assert_eq!(
        tok.credential,
        Some(Credential::IdentityToken("refresh-me".to_owned()))
    );

    let none = lookup(Some(dir.path()), "other:5000");
    assert_eq!(none.credential, None);
    assert!(
        none.source.contains("no entry for other:5000 in "),
        "{}",
        none.source
    );
    assert!(none.source.contains("config.json"), "{}", none.source);

    let missing = lookup(Some(&dir.path().join("nope")), "127.0.0.1:5000");
    assert_eq!(missing.credential, None);
    assert!(missing.source.contains("unreadable"), "{}", missing.source);
}

#[test]
fn token_responses() {
    let (v, until) = token_from_json(br#"{"token": "abc", "expires_in": 300}"#).expect("token");
    assert_eq!(v.to_str().ok(), Some("Bearer abc"));
    assert!(v.is_sensitive());
    assert!(until > Instant::now() + Duration::from_secs(200));
    let (v, _) = token_from_json(br#"{"access_token": "xyz"}"#).expect("oauth token");
    assert_eq!(v.to_str().ok(), Some("Bearer xyz"));
    assert!(token_from_json(br#"{"expires_in": 3}"#).is_none());
    assert!(token_from_json(b"<html>").is_none());
    // A 2-second token is still used for a second, not expired on arrival.
    let (_, until) = token_from_json(br#"{"token": "t", "expires_in": 2}"#).expect("token");
    assert!(until > Instant::now());
}

#[test]
fn form_encoding_escapes() {
    assert_eq!(
        form_body(&[("scope", "repository:a/b:pull"), ("x", "a b&c")]),
        "scope=repository%3Aa%2Fb%3Apull&x=a+b%26c"
    );
}
