//! The `[admin]` config table: parsed as written ([`RawAdmin`]), its TCP keys validated into
//! [`AdminTcp`] with errors that name the key (through `crate::config`'s rules). `admin.address`
//! (the unix socket) is resolved in `crate::config`, beside `grpc.address` it defaults from.
//!
//! The token file is checked when the daemon starts ([`load_token`]), not when the config is
//! parsed: `augur-snapshotter --check-config` on another host need not see the node's secret.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ConfigError, invalid};

/// The `[admin]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The admin API's unix socket (`""` = `admin.sock` beside `grpc.address`).
    pub address: Option<PathBuf>,
    /// `ip:port` of the optional TCP listener (`""` or absent: off).
    pub tcp_address: Option<String>,
    /// The file holding the TCP listener's bearer token.
    pub token_file: Option<PathBuf>,
}

/// The admin API's TCP listener, when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTcp {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer token's file (checked by [`load_token`] at start).
    pub token_file: PathBuf,
}

impl RawAdmin {
    /// The TCP listener's settings (`None`: off); an error names the key.
    pub fn validate_tcp(&self) -> Result<Option<AdminTcp>, ConfigError> {
        let token_file = self
            .token_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let Some(text) = self.tcp_address.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let address: SocketAddr = text.parse().map_err(|_| {
            invalid(
                "admin.tcp_address",
                text.to_owned(),
                "an ip:port such as \"127.0.0.1:9465\" (no host names), or \"\" for no TCP \
                 listener"
                    .into(),
            )
        })?;
        let Some(token_file) = token_file else {
            return Err(invalid(
                "admin.token_file",
                String::new(),
                "admin.tcp_address is set, so a token file is required: an absolute path to a \
                 root-owned file of mode 0600 holding the bearer token"
                    .into(),
            ));
        };
        if !token_file.is_absolute() {
            return Err(invalid(
                "admin.token_file",
                token_file.display().to_string(),
                "must be an absolute path".into(),
            ));
        }
        Ok(Some(AdminTcp {
            address,
            token_file,
        }))
    }
}

/// A bearer token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(crate) Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Reads the token from `path`: a regular file owned by root, readable and writable by its
/// owner only (mode 0600 or stricter), holding a non-empty token (surrounding whitespace is
/// ignored). Errors name `admin.token_file`.
pub fn load_token(path: &Path) -> Result<Token, ConfigError> {
    let bad = |rule: String| invalid("admin.token_file", path.display().to_string(), rule);
    let meta = std::fs::symlink_metadata(path).map_err(|e| bad(format!("cannot stat it: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(bad(
            "must be a regular file (not a symlink or directory)".into()
        ));
    }
    if meta.uid() != 0 {
        return Err(bad(format!(
            "must be owned by root (it is owned by uid {}): chown root:root it",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & !0o600 != 0 {
        return Err(bad(format!(
            "mode {mode:04o} lets others read or change it: chmod 0600 it"
        )));
    }
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(bad(
            "is empty: write a random token into it, e.g. `openssl rand -hex 32`".into(),
        ));
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(
            "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                .into(),
        ));
    }
    Ok(Token(token.to_vec()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn raw(tcp: Option<&str>, token: Option<&str>) -> RawAdmin {
        RawAdmin {
            address: None,
            tcp_address: tcp.map(str::to_owned),
            token_file: token.map(PathBuf::from),
        }
    }

    fn key_of(e: ConfigError) -> &'static str {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not a key error: {other}"),
        }
    }

    #[test]
    fn tcp_is_off_by_default_and_needs_an_address_and_a_token_file() {
        assert_eq!(raw(None, None).validate_tcp().unwrap(), None);
        assert_eq!(raw(Some(""), Some("/x")).validate_tcp().unwrap(), None);
        let on = raw(Some("127.0.0.1:9465"), Some("/etc/augur/admin.token"));
        assert_eq!(
            on.validate_tcp().unwrap(),
            Some(AdminTcp {
                address: ([127, 0, 0, 1], 9465).into(),
                token_file: "/etc/augur/admin.token".into(),
            })
        );
        let e = raw(Some("127.0.0.1:9465"), None)
            .validate_tcp()
            .unwrap_err();
        assert!(e.to_string().contains("a token file is required"), "{e}");
        assert_eq!(key_of(e), "admin.token_file");
        let e = raw(Some("localhost:9465"), Some("/t")).validate_tcp();
        assert_eq!(key_of(e.unwrap_err()), "admin.tcp_address");
        let e = raw(Some("127.0.0.1:9465"), Some("t")).validate_tcp();
        assert_eq!(key_of(e.unwrap_err()), "admin.token_file");
    }

    #[test]
    fn token_files_must_be_private_root_owned_regular_and_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            assert_eq!(load_token(&file).unwrap().0, b"s3cret-token");
        }
        let refused = |why: &str| {
            let e = load_token(&file).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("admin.token_file") && text.contains(why),
                "{text}"
            );
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        refused(if root { "chmod 0600" } else { "owned by root" });
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        if root {
            assert!(load_token(&file).is_ok(), "0400 is stricter than 0600");
            std::fs::write(&file, " \n").unwrap();
            refused("is empty");
            std::fs::write(&file, "two words").unwrap();
            refused("printable ASCII");
            std::fs::write(&file, "tok").unwrap();
            nix::unistd::chown(&file, Some(65534.into()), None).unwrap();
            refused("owned by root");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = load_token(&link).unwrap_err().to_string();
        assert!(e.contains("regular file"), "{e}");
        let e = load_token(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin.token_file") && e.contains("cannot stat"),
            "{e}"
        );
    }
}
