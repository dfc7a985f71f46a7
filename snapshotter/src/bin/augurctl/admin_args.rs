//! The arguments of every subcommand that talks to the daemon's admin API (`cache`, `trace`,
//! `status`, `predict`, `model`, `prefetch`, `image plan`): where the API is (the unix socket,
//! or `--address` over TCP with the token of `--token-file` / `AUGUR_TOKEN_FILE`), and how to
//! print.

use std::path::{Path, PathBuf};

use anyhow::Context;
use augur_snapshotter::admin::AdminClient;

/// The daemon's admin socket when `admin.address` is not set.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/augur/admin.sock";
/// The environment variable naming the token file when `--token-file` is not given.
pub const TOKEN_FILE_ENV: &str = "AUGUR_TOKEN_FILE";

/// `--admin-socket` at the top level (global), so `augurctl --admin-socket S status` works as
/// well as `augurctl status --admin-socket S`: clap hands the value down by its id to
/// [`Connection::admin_socket`], which the subcommands read. Only the socket: `--address` cannot
/// be global, `image rpull` has its own (containerd's socket, as `ctr` has).
#[derive(Debug, Clone, clap::Args)]
pub struct TopLevel {
    /// The daemon's admin socket (its `admin.address`; admin commands only).
    #[arg(long, global = true, value_name = "SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
}

/// Where the daemon's admin API is.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The daemon's admin socket (its `admin.address`).
    #[arg(long, global = true, value_name = "SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Talk to the admin API over TCP instead (`http://host:port`, the daemon's
    /// `admin.tcp_address`); needs --token-file.
    #[arg(long, global = true, value_name = "URL")]
    pub address: Option<String>,
    /// The file holding the bearer token for --address (default: $AUGUR_TOKEN_FILE).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Where the daemon is and how to print.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Print the daemon's JSON answer instead of text (`trace export`: a JSON summary on
    /// stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw no progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

impl AdminArgs {
    /// A client of the admin API: over TCP if --address is given, else on the socket.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        self.connection.client()
    }
}

impl Connection {
    /// A client of the admin API: over TCP if --address is given, else on the socket.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let Some(url) = &self.address else {
            return Ok(AdminClient::new(&self.admin_socket));
        };
        let authority = authority(url)?;
        let file = self
            .token_file
            .clone()
            .or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from))
            .with_context(|| {
                format!(
                    "--address needs the daemon's bearer token: give --token-file FILE or set \
                     {TOKEN_FILE_ENV} (the file of the daemon's admin.token_file, or a copy)"
                )
            })?;
        Ok(AdminClient::tcp(&authority, &read_token(&file)?))
    }
}

/// `host:port` of an `http://host:port[/]` URL.
fn authority(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!(
            "--address {url:?}: give http://host:port (the admin API has no TLS; reach a \
             TLS proxy in front of it with curl)"
        )
    })?;
    let authority = rest.trim_end_matches('/');
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('/') && authority.contains(':'),
        "--address {url:?}: give http://host:port, with the port of the daemon's admin.tcp_address"
    );
    Ok(authority.to_owned())
}

fn read_token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the token file {}", file.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        file.display()
    );
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn addresses_are_http_urls_with_a_port() {
        assert_eq!(
            authority("http://127.0.0.1:9465").unwrap(),
            "127.0.0.1:9465"
        );
        assert_eq!(authority("http://[::1]:9465/").unwrap(), "[::1]:9465");
        for bad in [
            "127.0.0.1:9465",
            "https://h:1",
            "http://h",
            "http://h:1/x",
            "http://",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
