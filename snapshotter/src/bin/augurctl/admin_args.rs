//! The arguments of every subcommand that talks to the daemon's admin API (`cache`, `trace`,
//! `status`, `predict`, `model`, `prefetch`): where the socket is, and whether to print JSON.

use std::path::PathBuf;

use augur_snapshotter::admin::AdminClient;

/// The daemon's admin socket when `admin.address` is not set.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/augur/admin.sock";

/// Where the daemon is and how to print.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The daemon's admin socket (its `admin.address`).
    #[arg(long, global = true, value_name = "SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Print the daemon's JSON answer instead of text (`trace export`: a JSON summary on
    /// stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw no progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

impl AdminArgs {
    /// A client of the admin API on the chosen socket.
    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin_socket)
    }
}
