//! Deployment-level prediction: which images this node will pull next, and when, learned
//! online from the node's own sequence of image pulls.
//!
//! | module | role |
//! |---|---|
//! | this file | [`PullEvent`], [`ImagePrediction`], [`PullPredictor`], reference normalisation, the pull log format |
//! | [`model`] | [`DeployModel`]: first-order transitions + periodicity + decayed popularity, with saved state |
//! | [`baselines`] | what the model must beat: no prediction, most recent, most frequent |
//! | [`eval`] | replays a pull log in simulated time: top-k hit rates, lead time, wasted warm-ups |
//! | [`synth`] | seeded synthetic pull logs (deployment pipelines, cron jobs, noise) |
//!
//! Pure: no I/O but reading a pull log and loading or saving state. The daemon owns one
//! [`DeployModel`] behind a mutex (`snapshotter/src/warm/`); every call is short CPU work.
//! Choices are recorded in `docs/decisions/` (deployment-level prediction); the pull log
//! format is in `docs/traces.md`.

pub mod baselines;
pub mod eval;
pub mod model;
pub mod synth;

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use model::{DeployConfig, DeployModel};

use crate::error::Error;

/// One image pull the node made: one line of the pull log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullEvent {
    /// When, in milliseconds since the Unix epoch.
    pub t_unix_ms: u64,
    /// The image reference as the client named it (normalised by the models).
    pub image: String,
}

/// Why an image is predicted: the component that contributed most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It usually follows the image pulled last.
    Follows,
    /// It is pulled at regular intervals and is due.
    Periodic,
    /// It is pulled often lately.
    Popular,
    /// A baseline's rule.
    Baseline,
}

/// An image the node is expected to pull.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagePrediction {
    /// The normalised reference ([`normalize`]).
    pub image: String,
    /// How likely it is to be pulled within the model's horizon, in `[0, 1]`.
    pub probability: f32,
    /// Expected time until it is pulled.
    pub expected_in: Duration,
    /// The component that contributed most.
    pub reason: Reason,
}

/// A model of the node's pull sequence: told each pull in time order, asked at any time.
pub trait PullPredictor {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// Learns from a pull (events arrive in time order).
    fn observe(&mut self, pull: &PullEvent);
    /// The `max` images most likely to be pulled next at `now_ms`, most likely first.
    fn predict(&self, now_ms: u64, max: usize) -> Vec<ImagePrediction>;
}

/// The identity of an image for prediction: `host/repository:tag`, or `host/repository@digest`
/// when only a digest is given. Docker Hub's short forms are expanded (`busybox` →
/// `docker.io/library/busybox:latest`) and a digest next to a tag is dropped: a tag pulled again
/// after a rollout is the same deployment with new content, and warming resolves the tag to
/// whatever it names then.
pub fn normalize(reference: &str) -> String {
    let reference = reference.trim();
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    // A tag is after the last ':' that follows the last '/' (a port is not a tag).
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or_default();
    let has_host =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_host {
        repo.to_owned()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    match (tag, digest) {
        (Some(t), _) => format!("{repo}:{t}"),
        (None, Some(d)) => format!("{repo}@{d}"),
        (None, None) => format!("{repo}:latest"),
    }
}

/// Reads a pull log (JSON Lines of [`PullEvent`]; blank lines skipped, unknown fields
/// ignored) and returns its events in time order.
pub fn read_pull_log(path: &Path) -> Result<Vec<PullEvent>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let event: PullEvent = serde_json::from_str(&line).map_err(|e| Error::BadExport {
            path: path.to_path_buf(),
            line: n as u64 + 1,
            reason: format!("{e} (expected {{\"t_unix_ms\":…,\"image\":\"…\"}})"),
        })?;
        events.push(event);
    }
    events.sort_by_key(|e| e.t_unix_ms);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_to_one_name_per_deployment() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
            ("127.0.0.1:5000/app:v2", "127.0.0.1:5000/app:v2"),
            ("localhost/app:v2", "localhost/app:v2"),
            ("ghcr.io/o/app:v2@sha256:ab", "ghcr.io/o/app:v2"),
            ("ghcr.io/o/app@sha256:ab", "ghcr.io/o/app@sha256:ab"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn a_bad_log_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulls.jsonl");
        std::fs::write(
            &path,
            "{\"t_unix_ms\":2,\"image\":\"b\"}\n\n{\"t_unix_ms\":1,\"image\":\"a\",\"x\":1}\nnope\n",
        )
        .unwrap();
        let e = read_pull_log(&path).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        std::fs::write(
            &path,
            "{\"t_unix_ms\":2,\"image\":\"b\"}\n{\"t_unix_ms\":1,\"image\":\"a\"}\n",
        )
        .unwrap();
        let events = read_pull_log(&path).unwrap();
        assert_eq!(events[0].image, "a", "sorted by time");
    }
}
