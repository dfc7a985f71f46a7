//! The record stored per snapshot, and the domain types the rest of the daemon speaks.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::filter::Adaptor;

/// Snapshot labels, kept sorted so listings and records are stable.
pub type Labels = BTreeMap<String, String>;

/// The kind of a snapshot, numbered as in containerd's `snapshots.Kind` proto enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A read-only view of a committed snapshot; cannot be committed.
    View = 1,
    /// A writable snapshot that may be committed.
    Active = 2,
    /// An immutable snapshot that may be a parent.
    Committed = 3,
}

impl Kind {
    /// The lowercase name containerd's filters and messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A point in time with nanosecond precision, as protobuf's `Timestamp` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

/// Disk usage of a snapshot, as containerd's `fs.DiskUsage` counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Allocated bytes (`st_blocks * 512`), each inode counted once.
    pub size: i64,
    /// Distinct inodes.
    pub inodes: i64,
}

/// What Stat, Update and List return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The snapshot's key (or committed name).
    pub name: String,
    /// The parent's key, empty for a base snapshot.
    pub parent: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// User labels.
    pub labels: Labels,
    /// When it was created (for committed snapshots: when it was committed).
    pub created: Timestamp,
    /// When it was last changed.
    pub updated: Timestamp,
}

/// The stored form of a snapshot (the key is the table key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Directory id under `snapshots/`, unique for the store's lifetime.
    pub id: u64,
    /// Kind.
    pub kind: Kind,
    /// Parent key, empty for none.
    pub parent: String,
    /// Labels.
    pub labels: Labels,
    /// Creation time.
    pub created: Timestamp,
    /// Last update time.
    pub updated: Timestamp,
    /// Usage measured after commit (zero for active and view snapshots, and while pending).
    pub usage: Usage,
    /// Committed, but `usage` not measured yet (the `augur-usage` thread or `Usage` will).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_pending: bool,
    /// For a lazily mounted remote layer: where its bytes come from (absent for every other
    /// snapshot, so records written before lazy pulling existed read back unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteLayer>,
}

/// What a committed remote layer's record keeps: enough to mount it again after a restart
/// without asking the registry (its TOC is saved under `layers/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLayer {
    /// The image reference the layer is fetched from.
    pub image_ref: String,
    /// The layer blob's digest.
    pub layer_digest: String,
    /// The digest of its (verified) TOC JSON.
    pub toc_digest: String,
    /// Where the TOC starts in the blob (the end of the last data member).
    pub toc_offset: u64,
}

impl Record {
    /// The public view of this record under `key`.
    pub fn info(&self, key: &str) -> Info {
        Info {
            name: key.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind,
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// The fields containerd's snapshot filters can name: `kind`, `name`, `parent`, `labels.<key>`.
impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "kind" => Some(self.kind.as_str().to_owned()),
            "name" => Some(self.name.clone()),
            "parent" => Some(self.parent.clone()),
            "labels" => {
                if self.labels.is_empty() {
                    return None;
                }
                self.labels.get(&path[1..].join(".")).cloned()
            }
            _ => None,
        }
    }
}
