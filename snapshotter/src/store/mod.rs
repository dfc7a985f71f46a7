//! Snapshot metadata in one embedded, transactional store (redb).
//!
//! Every multi-key change (create, commit, remove, label update) is one redb write transaction,
//! committed durably (fsync) before the caller answers containerd, so a crash never leaves a
//! half-made snapshot in the metadata: either the whole change is there after a restart or none
//! of it is. Directories on disk are reconciled against this store by `Cleanup`.
//!
//! Tables:
//! - `snapshots`: key → [`Record`] (JSON): id, kind, parent key, labels, timestamps, usage.
//! - `children`: (parent id, child id) → child key, so "has children" is one range probe.
//! - `meta`: `next_id` (ids are never reused) and `schema`.
//!
//! The semantics copy containerd's `snapshots/storage` (bolt) metastore, which every containerd
//! snapshotter shares, so Augur answers exactly as `overlayfs` does for the same calls.

mod records;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;

pub use records::{Info, Kind, Labels, Record, RemoteLayer, Timestamp, Usage};

use crate::error::{Error, Result};
use crate::filter::Filter;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CHILDREN: TableDefinition<(u64, u64), &str> = TableDefinition::new("children");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_ID: &str = "next_id";
const SCHEMA: &str = "schema";
/// Version of the table layout and record encoding; bump with a migration when either changes.
const SCHEMA_VERSION: u64 = 1;

/// A failure of the metadata store itself (not of a snapshot rule).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error(
        "{path} is in use by another process; is another augur-snapshotter running with this root?"
    )]
    AlreadyOpen {
        /// The database file.
        path: String,
    },
    /// The database was written by an incompatible version of Augur.
    #[error("metadata schema version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    Schema {
        /// The version on disk.
        found: u64,
    },
    /// A record does not decode.
    #[error("record of snapshot {key:?} is corrupt")]
    Corrupt {
        /// The key whose record is bad.
        key: String,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// redb failed.
    #[error("metadata database")]
    Db(#[from] redb::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Store(StoreError::Db(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The embedded metadata database.
#[derive(Debug)]
pub struct Store {
    db: redb::Database,
}

/// What Prepare/View/Mounts need to compute mounts: the snapshot's id, kind and parent chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Directory id under `snapshots/`.
    pub id: u64,
    /// Active or view (committed snapshots have no mounts).
    pub kind: Kind,
    /// Ids of the parent chain, nearest parent first.
    pub parent_ids: Vec<u64>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and checks its schema.
    pub fn open(path: &Path) -> Result<Store> {
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
                path: path.display().to_string(),
            },
            other => StoreError::Db(other.into()),
        })?;
        let tx = db.begin_write()?;
        {
            tx.open_table(SNAPSHOTS)?;
            tx.open_table(CHILDREN)?;
            let mut meta = tx.open_table(META)?;
            let schema = meta.get(SCHEMA)?.map(|v| v.value());
            match schema {
                None => {
                    meta.insert(SCHEMA, SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { found }.into()),
            }
        }
        tx.commit()?;
        Ok(Store { db })
    }

    /// Starts a read-only view of the latest committed state.
    pub fn read(&self) -> Result<ReadTxn> {
        let tx = self.db.begin_read()?;
        Ok(ReadTxn {
            snapshots: tx.open_table(SNAPSHOTS)?,
            children: tx.open_table(CHILDREN)?,
        })
    }

    /// Starts the (single) write transaction; others wait until it commits or drops.
    pub fn write(&self) -> Result<WriteTxn> {
        Ok(WriteTxn {
            tx: self.db.begin_write()?,
        })
    }
}

/// A consistent read-only view.
#[derive(Debug)]
pub struct ReadTxn {
    snapshots: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    children: redb::ReadOnlyTable<(u64, u64), &'static str>,
}

impl ReadTxn {
    /// The snapshot's id, info and stored usage (containerd `storage.GetInfo`).
    pub fn get_info(&self, key: &str) -> Result<(u64, Info, Usage)> {
        let rec = get_record(&self.snapshots, key)?;
        Ok((rec.id, rec.info(key), rec.usage))
    }

    /// Whether `key`'s usage is still to be measured (committed, not measured yet).
    pub fn usage_pending(&self, key: &str) -> Result<bool> {
        Ok(get_record(&self.snapshots, key)?.usage_pending)
    }

    /// Every committed snapshot whose usage is still to be measured: (directory id, key).
    pub fn pending_usage(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for item in self.snapshots.iter()? {
            let (k, v) = item?;
            let rec = decode(k.value(), v.value())?;
            if rec.usage_pending {
                out.push((rec.id, k.value().to_owned()));
            }
        }
        Ok(out)
    }

    /// The id, kind and parent chain of an active or view snapshot (`storage.GetSnapshot`).
    pub fn get_snapshot(&self, key: &str) -> Result<Snapshot> {
        let rec = get_record(&self.snapshots, key)?;
        if rec.kind == Kind::Committed {
            return Err(Error::NoMounts { key: key.into() });
        }
        let parent_ids = parent_chain(&self.snapshots, &rec.parent)?;
        Ok(Snapshot {
            id: rec.id,
            kind: rec.kind,
            parent_ids,
        })
    }

    /// Calls `f` for every snapshot that `filter` matches, in key order.
    pub fn walk(&self, filter: &Filter, mut f: impl FnMut(Info) -> Result<()>) -> Result<()> {
        for item in self.snapshots.iter()? {
            let (k, v) = item?;
            let key = k.value();
            let info = decode(key, v.value())?.info(key);
            if filter.matches(&info) {
                f(info)?;
            }
        }
        Ok(())
    }

    /// Directory id → key, for every snapshot (`storage.IDMap`), used by Cleanup.
    pub fn id_map(&self) -> Result<HashMap<u64, String>> {
        let mut ids = HashMap::new();
        for item in self.snapshots.iter()? {
            let (k, v) = item?;
            ids.insert(decode(k.value(), v.value())?.id, k.value().to_owned());
        }
        Ok(ids)
    }

    /// Every remote layer record: (directory id, key, remote info).
    pub fn remote_layers(&self) -> Result<Vec<(u64, String, RemoteLayer)>> {
        remote_layers_in(&self.snapshots)
    }

    /// Number of snapshots whose parent has directory id `id`.
    pub fn child_count(&self, id: u64) -> Result<usize> {
        Ok(self.children.range((id, 0)..=(id, u64::MAX))?.count())
    }
}

/// The write transaction: every method is one step of an all-or-nothing change.
#[allow(missing_debug_implementations)]
pub struct WriteTxn {
    tx: redb::WriteTransaction,
}

impl WriteTxn {
    /// Creates an active or view snapshot on `parent` (`storage.CreateSnapshot`).
    pub fn create(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Snapshot> {
        self.create_record(kind, key, parent, labels, None)
    }

    /// Creates a committed snapshot for a lazily mounted remote layer in one step (it is never
    /// active: its content is the registry's).
    pub fn create_remote(
        &mut self,
        name: &str,
        parent: &str,
        labels: Labels,
        remote: RemoteLayer,
    ) -> Result<Snapshot> {
        self.create_record(Kind::Committed, name, parent, labels, Some(remote))
    }

    fn create_record(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
        remote: Option<RemoteLayer>,
    ) -> Result<Snapshot> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        let parent_ids = if parent.is_empty() {
            Vec::new()
        } else {
            let prec = get_record(&snaps, parent).map_err(|e| match e {
                Error::NotFound { .. } => Error::ParentNotFound {
                    parent: parent.into(),
                },
                other => other,
            })?;
            if prec.kind != Kind::Committed {
                return Err(Error::ParentNotCommitted {
                    parent: parent.into(),
                    kind: prec.kind.as_str(),
                });
            }
            parent_chain(&snaps, parent)?
        };
        if snaps.get(key)?.is_some() {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        let id = self.next_id()?;
        let now = Timestamp::now();
        let rec = Record {
            id,
            kind,
            parent: parent.into(),
            labels,
            created: now,
            updated: now,
            usage: Usage::default(),
            usage_pending: false,
            remote,
        };
        snaps.insert(key, encode(&rec).as_slice())?;
        if let Some(&pid) = parent_ids.first() {
            self.tx.open_table(CHILDREN)?.insert((pid, id), key)?;
        }
        Ok(Snapshot {
            id,
            kind,
            parent_ids,
        })
    }

    /// Turns active snapshot `key` into committed snapshot `name` (`storage.CommitActive`).
    /// Returns the directory id, which does not change.
    /// `usage` is `None` when it is measured later ([`WriteTxn::set_measured_usage`]).
    pub fn commit_active(
        &mut self,
        key: &str,
        name: &str,
        usage: Option<Usage>,
        labels: Labels,
    ) -> Result<u64> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        if snaps.get(name)?.is_some() {
            return Err(Error::AlreadyExists { key: name.into() });
        }
        let mut rec = get_record(&snaps, key)?;
        if rec.kind != Kind::Active {
            return Err(Error::NotActive {
                key: key.into(),
                kind: rec.kind.as_str(),
            });
        }
        let now = Timestamp::now();
        rec.kind = Kind::Committed;
        rec.created = now;
        rec.updated = now;
        rec.labels = labels;
        rec.usage_pending = usage.is_none();
        rec.usage = usage.unwrap_or_default();
        snaps.remove(key)?;
        snaps.insert(name, encode(&rec).as_slice())?;
        if !rec.parent.is_empty() {
            let pid = get_record(&snaps, &rec.parent)?.id;
            self.tx.open_table(CHILDREN)?.insert((pid, rec.id), name)?;
        }
        Ok(rec.id)
    }

    /// Records the usage measured for committed snapshot `key`, if it is still the snapshot in
    /// directory `id` and still pending (it may have been removed meanwhile).
    pub fn set_measured_usage(&mut self, key: &str, id: u64, usage: Usage) -> Result<()> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        let mut rec = match get_record(&snaps, key) {
            Ok(rec) if rec.id == id && rec.usage_pending => rec,
            Ok(_) | Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        rec.usage = usage;
        rec.usage_pending = false;
        snaps.insert(key, encode(&rec).as_slice())?;
        Ok(())
    }

    /// Marks `key`'s usage as not measured (tests: the state a crash after Commit leaves).
    #[cfg(test)]
    pub fn mark_usage_pending_for_test(&mut self, key: &str) -> Result<()> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        let mut rec = get_record(&snaps, key)?;
        rec.usage_pending = true;
        rec.usage = Usage::default();
        snaps.insert(key, encode(&rec).as_slice())?;
        Ok(())
    }

    /// Deletes `key` unless it has children (`storage.Remove`). Returns the deleted record.
    pub fn remove(&mut self, key: &str) -> Result<Record> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        let mut children = self.tx.open_table(CHILDREN)?;
        let rec = get_record(&snaps, key)?;
        let count = children.range((rec.id, 0)..=(rec.id, u64::MAX))?.count();
        if count > 0 {
            return Err(Error::HasChildren {
                key: key.into(),
                children: count,
            });
        }
        if !rec.parent.is_empty() {
            let pid = get_record(&snaps, &rec.parent)?.id;
            children.remove((pid, rec.id))?;
        }
        snaps.remove(key)?;
        Ok(rec)
    }

    /// Replaces labels per containerd's field paths (`storage.UpdateInfo`); other fields are
    /// immutable. An empty `fieldpaths` replaces all labels.
    pub fn update(&mut self, key: &str, labels: &Labels, fieldpaths: &[String]) -> Result<Info> {
        let mut snaps = self.tx.open_table(SNAPSHOTS)?;
        let mut rec = get_record(&snaps, key)?;
        if fieldpaths.is_empty() {
            rec.labels = labels.clone();
        }
        for path in fieldpaths {
            if let Some(label) = path.strip_prefix("labels.") {
                match labels.get(label) {
                    Some(v) => rec.labels.insert(label.to_owned(), v.clone()),
                    None => rec.labels.remove(label),
                };
            } else if path == "labels" {
                rec.labels = labels.clone();
            } else {
                return Err(Error::InvalidArgument(format!(
                    "cannot update field {path:?} of snapshot {key:?}: only \"labels\" and \"labels.<key>\" can change"
                )));
            }
        }
        rec.updated = Timestamp::now();
        snaps.insert(key, encode(&rec).as_slice())?;
        Ok(rec.info(key))
    }

    /// Read access inside this transaction.
    pub fn get_info(&self, key: &str) -> Result<(u64, Info, Usage)> {
        let snaps = self.tx.open_table(SNAPSHOTS)?;
        let rec = get_record(&snaps, key)?;
        Ok((rec.id, rec.info(key), rec.usage))
    }

    /// Directory id → key for every snapshot, as this transaction sees it.
    pub fn id_map(&self) -> Result<HashMap<u64, String>> {
        let snaps = self.tx.open_table(SNAPSHOTS)?;
        let mut ids = HashMap::new();
        for item in snaps.iter()? {
            let (k, v) = item?;
            ids.insert(decode(k.value(), v.value())?.id, k.value().to_owned());
        }
        Ok(ids)
    }

    /// Every remote layer record, as this transaction sees it.
    pub fn remote_layers(&self) -> Result<Vec<(u64, String, RemoteLayer)>> {
        remote_layers_in(&self.tx.open_table(SNAPSHOTS)?)
    }

    /// Makes every change durable (fsync) or none of them.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }

    /// Commits without an fsync: the changes are visible at once and become durable with the
    /// next [`WriteTxn::commit`]; a crash before that loses them (all or none). Only for changes
    /// that are recomputed when lost (a measured usage: its pending mark was written durably).
    pub fn commit_lazily(mut self) -> Result<()> {
        self.tx
            .set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Db(redb::Error::from(e)))?;
        self.tx.commit()?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        let mut meta = self.tx.open_table(META)?;
        let id = meta.get(NEXT_ID)?.map_or(1, |v| v.value());
        meta.insert(NEXT_ID, id + 1)?;
        Ok(id)
    }
}

fn remote_layers_in<T>(table: &T) -> Result<Vec<(u64, String, RemoteLayer)>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let rec = decode(k.value(), v.value())?;
        if let Some(remote) = rec.remote {
            out.push((rec.id, k.value().to_owned(), remote));
        }
    }
    Ok(out)
}

fn get_record<T>(table: &T, key: &str) -> Result<Record>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let guard = table
        .get(key)?
        .ok_or_else(|| Error::NotFound { key: key.into() })?;
    decode(key, guard.value())
}

/// Ids of `parent` and all its ancestors, nearest first.
fn parent_chain<T>(table: &T, parent: &str) -> Result<Vec<u64>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut ids = Vec::new();
    let mut next = parent.to_owned();
    while !next.is_empty() {
        let rec = get_record(table, &next).map_err(|e| match e {
            Error::NotFound { key } => Error::ParentNotFound { parent: key },
            other => other,
        })?;
        ids.push(rec.id);
        next = rec.parent;
    }
    Ok(ids)
}

fn encode(rec: &Record) -> Vec<u8> {
    // A record is strings, integers and a string map: JSON encoding has no failure case.
    serde_json::to_vec(rec).expect("snapshot record encodes as JSON")
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|source| {
        StoreError::Corrupt {
            key: key.into(),
            source,
        }
        .into()
    })
}

#[cfg(test)]
mod tests;
