//! The active runs the recorder follows, and which of them a read belongs to.
//!
//! A run is an active snapshot (Prepare, not View) whose parent chain holds at least one lazily
//! mounted layer; it is keyed by its snapshot key as containerd sends it
//! (`<namespace>/<n>/<key>`), whose last component is the container id for `ctr run` and CRI. Each run builds its trace in memory ([`predictor::trace::TraceBuilder`]) and its
//! workload signature as accesses arrive.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::predictor::trace::{AccessSource, ChunkRecord, RunHeader, TraceBuilder};
use crate::predictor::workload::{SignatureBuilder, WORKLOAD_LABEL};
use crate::predictor::{self, Access, Layout, RunContext, RunId};

/// At most this many accesses are kept per run (about 40 MiB in memory); later ones are counted
/// as truncated. A container reading in a loop for days must not grow the daemon without bound.
pub const MAX_RUN_ACCESSES: usize = 1_000_000;

/// What the snapshot layer tells the recorder when a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The snapshot key (the container id).
    pub key: String,
    /// The image reference.
    pub image: String,
    /// Digests of the run's lazily mounted layers, lowest first.
    pub layers: Vec<String>,
    /// Their multi-chunk files, for the models (not kept in the trace).
    pub layout: Arc<Layout>,
    /// Labels kept in the trace header (the workload label among them, if set).
    pub labels: BTreeMap<String, String>,
    /// When the snapshot was prepared (time zero of the run).
    pub started: Instant,
    /// The same moment, Unix milliseconds.
    pub started_unix_ms: u64,
}

impl RunStart {
    /// The context observers and models are given.
    pub fn context(&self) -> RunContext {
        RunContext {
            image: self.image.clone(),
            label: self.labels.get(WORKLOAD_LABEL).cloned(),
            layers: self.layers.clone(),
            layout: Arc::clone(&self.layout),
        }
    }
}

/// One active run.
#[derive(Debug)]
pub struct Run {
    /// Its id among the runs of this daemon process.
    pub id: RunId,
    started: Instant,
    layers: Vec<String>,
    builder: TraceBuilder,
    signature: SignatureBuilder,
    accesses: usize,
    /// Accesses past [`MAX_RUN_ACCESSES`], not kept.
    pub truncated: u64,
}

impl Run {
    fn new(id: RunId, start: RunStart) -> Run {
        let label = start.labels.get(WORKLOAD_LABEL).map(String::as_str);
        let signature = SignatureBuilder::new(label);
        let header = RunHeader {
            image: start.image,
            workload: String::new(),
            layers: start.layers.clone(),
            started_unix_ms: start.started_unix_ms,
            labels: start.labels,
        };
        Run {
            id,
            started: start.started,
            layers: start.layers,
            builder: TraceBuilder::new(header),
            signature,
            accesses: 0,
            truncated: 0,
        }
    }

    /// The index of `digest` among the run's layers.
    pub fn layer_index(&self, digest: &str) -> Option<u32> {
        self.layers
            .iter()
            .position(|l| l == digest)
            .map(|i| i as u32)
    }

    /// Records one access made at `at`; returns it as models see it, or `None` if the run
    /// already holds [`MAX_RUN_ACCESSES`].
    pub fn record(
        &mut self,
        chunk: &ChunkRecord,
        at: Instant,
        offset: u64,
        len: u32,
        source: AccessSource,
    ) -> Option<Access> {
        if self.accesses >= MAX_RUN_ACCESSES {
            self.truncated += 1;
            return None;
        }
        let since = at.saturating_duration_since(self.started);
        let t_us = u64::try_from(since.as_micros()).unwrap_or(u64::MAX);
        self.builder.access(chunk, t_us, offset, len, source);
        self.signature.observe(chunk.digest);
        self.accesses += 1;
        Some(Access {
            chunk: chunk.digest,
            at: Duration::from_micros(t_us),
            size: chunk.size,
            source,
        })
    }

    /// The finished trace, `None` if the run read nothing.
    pub fn finish(self) -> Option<predictor::Trace> {
        if self.accesses == 0 {
            return None;
        }
        let mut builder = self.builder;
        builder.header_mut().workload = self.signature.signature();
        Some(builder.finish())
    }
}

/// Where a read goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// To the run with this key.
    Run(String),
    /// To no run: counted and dropped.
    Unattributed,
}

/// The active runs, by snapshot key.
#[derive(Debug, Default)]
pub struct Runs {
    active: HashMap<String, Run>,
    next_id: u64,
}

impl Runs {
    /// Starts a run (replacing one of the same key, which cannot normally exist: keys are
    /// unique among snapshots). Returns its id.
    pub fn start(&mut self, start: RunStart) -> RunId {
        self.next_id += 1;
        let id = RunId(self.next_id);
        self.active.insert(start.key.clone(), Run::new(id, start));
        id
    }

    /// Ends run `key`, if it is one.
    pub fn end(&mut self, key: &str) -> Option<Run> {
        self.active.remove(key)
    }

    /// Every active run, ending them all (shutdown).
    pub fn drain(&mut self) -> Vec<Run> {
        self.active.drain().map(|(_, run)| run).collect()
    }

    /// The run with this key.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Run> {
        self.active.get_mut(key)
    }

    /// How many runs are active.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The first of `candidates` (container ids of the reader) that names an active run using
    /// `layer`: a run whose key, or the key's last `/` component, is the candidate (containerd
    /// hands snapshotters keys as `<namespace>/<n>/<key>`). Should two namespaces run containers
    /// of the same id on the same layer at once, the first found gets the read.
    pub fn matching(&self, candidates: &[String], layer: &str) -> Option<String> {
        candidates.iter().find_map(|c| {
            self.active
                .iter()
                .find(|(key, run)| {
                    (key.as_str() == c || container_of(key) == c)
                        && run.layer_index(layer).is_some()
                })
                .map(|(key, _)| key.clone())
        })
    }

    /// Where a read of `layer` goes: to `matched` (the reader's run, if its cgroup named one);
    /// otherwise to the only active run that uses the layer; otherwise nowhere.
    pub fn attribute(&self, matched: Option<&str>, layer: &str) -> Attribution {
        if let Some(key) = matched
            && self
                .active
                .get(key)
                .is_some_and(|r| r.layer_index(layer).is_some())
        {
            return Attribution::Run(key.to_owned());
        }
        let mut users = self
            .active
            .iter()
            .filter(|(_, r)| r.layer_index(layer).is_some());
        match (users.next(), users.next()) {
            (Some((key, _)), None) => Attribution::Run(key.clone()),
            _ => Attribution::Unattributed,
        }
    }
}

/// The container id a snapshot key carries: its last `/` component (`default/12/my-ctr` →
/// `my-ctr`; a key without `/` is its own).
pub fn container_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
