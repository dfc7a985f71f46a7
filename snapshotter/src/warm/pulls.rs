//! What counts as one image pull, and the pull log.
//!
//! containerd prepares each layer of an image separately, each Prepare carrying the image
//! reference. [`PullTracker`] folds them into pulls: a Prepare starts a new pull of its image
//! unless one is under way (its last Prepare less than [`PULL_GAP`] ago) with the same
//! manifest digest (when the labels carry one) that has not prepared this layer yet. A
//! layer prepared twice is therefore a second pull, however soon.
//!
//! [`PullLog`] appends pulls to `<root>/pulls.jsonl` (the format `augurctl predictor
//! deploy-eval` reads, see `docs/traces.md`), rotated to `pulls.jsonl.1` at [`MAX_LOG_BYTES`].
//! Not fsynced: it is a record of hints, and the model's saved state is what restarts use.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use augur_predictor::deploy::{PullEvent, normalize};

use crate::lazy::labels::RemoteSpec;

/// Prepares of one image this close together belong to one pull.
pub const PULL_GAP: Duration = Duration::from_secs(600);
/// The pull log is rotated at this size (the current and one previous file are kept).
pub const MAX_LOG_BYTES: u64 = 8 << 20;
/// Images tracked at once; older ones are forgotten first.
const MAX_TRACKED: usize = 1024;

#[derive(Debug)]
struct Current {
    manifest: Option<String>,
    layers: HashSet<String>,
    last: Instant,
}

/// Folds per-layer Prepares into pulls (see the module docs).
#[derive(Debug, Default)]
pub struct PullTracker {
    images: HashMap<String, Current>,
}

impl PullTracker {
    /// Whether this Prepare starts a new pull of its image (at `now`).
    pub fn is_new_pull(&mut self, spec: &RemoteSpec, now: Instant) -> bool {
        let key = normalize(&spec.image_ref);
        if let Some(c) = self.images.get_mut(&key) {
            let same_manifest = match (&c.manifest, &spec.manifest_digest) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let recent = now.saturating_duration_since(c.last) < PULL_GAP;
            if recent && same_manifest && !c.layers.contains(&spec.layer_digest) {
                c.layers.insert(spec.layer_digest.clone());
                c.last = now;
                return false;
            }
        }
        if self.images.len() >= MAX_TRACKED {
            self.images
                .retain(|_, c| now.saturating_duration_since(c.last) < PULL_GAP);
        }
        self.images.insert(
            key,
            Current {
                manifest: spec.manifest_digest.clone(),
                layers: HashSet::from([spec.layer_digest.clone()]),
                last: now,
            },
        );
        true
    }
}

/// The append-only, rotated pull log (see the module docs).
#[derive(Debug)]
pub struct PullLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

impl PullLog {
    /// The log at `path` (opened on the first append).
    pub fn new(path: &Path) -> Self {
        PullLog {
            path: path.to_path_buf(),
            file: None,
            size: 0,
        }
    }

    /// Appends one pull, rotating first if the file is full.
    pub fn append(&mut self, event: &PullEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size + line.len() as u64 > MAX_LOG_BYTES {
            self.file = None;
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            self.size = 0;
            return self.append(event);
        }
        if let Some(f) = &mut self.file {
            f.write_all(&line)?;
        }
        self.size += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, layer: &str, manifest: Option<&str>) -> RemoteSpec {
        RemoteSpec {
            target: "sha256:t".into(),
            image_ref: image.into(),
            layer_digest: layer.into(),
            toc_digest: None,
            manifest_digest: manifest.map(str::to_owned),
            layers: Vec::new(),
        }
    }

    #[test]
    fn the_layers_of_one_pull_are_one_pull_and_a_layer_prepared_again_is_another() {
        let mut t = PullTracker::default();
        let now = Instant::now();
        assert!(t.is_new_pull(&spec("r/a:1", "l1", None), now));
        assert!(!t.is_new_pull(&spec("r/a:1", "l2", None), now));
        assert!(
            t.is_new_pull(&spec("r/b:1", "l1", None), now),
            "another image"
        );
        assert!(t.is_new_pull(&spec("r/a:1", "l1", None), now), "l1 again");
        let later = now + PULL_GAP;
        assert!(
            t.is_new_pull(&spec("r/a:1", "l3", None), later),
            "long after"
        );
        assert!(t.is_new_pull(&spec("r/c:1", "l1", Some("m1")), later));
        assert!(
            t.is_new_pull(&spec("r/c:1", "l2", Some("m2")), later),
            "new manifest"
        );
    }

    #[test]
    fn the_log_rotates_and_keeps_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulls.jsonl");
        let mut log = PullLog::new(&path);
        let event = PullEvent {
            t_unix_ms: 1,
            image: "x".repeat(1 << 20),
        };
        for _ in 0..10 {
            log.append(&event).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= MAX_LOG_BYTES);
        assert!(size(&path.with_extension("jsonl.1")) <= MAX_LOG_BYTES);
        let read = |p: &Path| augur_predictor::deploy::read_pull_log(p).unwrap().len();
        let (now, before) = (read(&path), read(&path.with_extension("jsonl.1")));
        assert_eq!(
            now + before,
            10,
            "{now} + {before}: nothing lost in one rotation"
        );
    }
}
