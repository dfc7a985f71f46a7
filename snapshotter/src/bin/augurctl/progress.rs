//! Progress bars on stderr for augurctl's long work (`indicatif`): drawn only when stderr is a
//! terminal and `--quiet` is not given, so scripts and logs never see control sequences.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars are drawn: stderr is a terminal and the user did not ask for quiet.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar of `len` bytes labelled `what`; hidden unless [`wanted`].
pub fn bytes(len: u64, what: &str, quiet: bool) -> ProgressBar {
    bar(
        len,
        what,
        quiet,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
}

/// A bar of `len` items (layers, runs) labelled `what`; hidden unless [`wanted`].
pub fn items(len: u64, what: &str, quiet: bool) -> ProgressBar {
    bar(len, what, quiet, "{msg} [{bar:30}] {pos}/{len}")
}

fn bar(len: u64, what: &str, quiet: bool, template: &str) -> ProgressBar {
    let target = if wanted(quiet) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}
