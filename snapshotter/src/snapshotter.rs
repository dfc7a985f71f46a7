//! The snapshotter: containerd's Snapshots API over the metadata store and snapshot directories.
//!
//! Every method is synchronous and may block on disk (fsync, directory walks, recursive removal);
//! the gRPC layer runs them on tokio's blocking pool, never on async workers.
//!
//! On-disk layout under the root:
//!
//! ```text
//! metadata.db              redb: every snapshot's record (see `store`)
//! snapshots/<id>/fs        the snapshot's files (overlay upper dir while active)
//! snapshots/<id>/work      overlay work dir (active snapshots only)
//! snapshots/new-*          a Prepare in progress (renamed to <id> inside its transaction)
//! snapshots/trash-*        a removed snapshot's directory, being deleted in the background
//! ```
//!
//! Crash safety: a snapshot exists exactly when its record is committed in `metadata.db`. Any
//! directory under `snapshots/` without a record (an interrupted Prepare or Remove) is garbage
//! that [`Snapshotter::cleanup`] deletes; `new-*` and `trash-*` dirs are also swept at start
//! (in the background). A directory found under a fresh, never-committed id (a crash between
//! Prepare's rename and its commit) is replaced by the next Prepare that draws that id.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fsutil::{disk_usage, disk_usage_within, remove_tree};
use crate::lazy::{self, InheritedDir, LazyLayers, Resolved};
use crate::mounts::{Layout, Mount};
use crate::reaper::Reaper;
use crate::store::{Info, Kind, Labels, Store, Usage};
use crate::trace::Recorder;
use crate::usage_meter::UsageMeter;

/// Largest accepted snapshot key or commit name, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest accepted label key plus value, in bytes (containerd's `labels.Validate` limit).
pub const MAX_LABEL_BYTES: usize = 4096;

const TMP_PREFIX: &str = "new-";
const TRASH_PREFIX: &str = "trash-";
/// Upper dirs with at most this many entries are measured inside Commit; larger ones (image
/// layers) by the `augur-usage` thread after it.
pub const INLINE_USAGE_INODES: usize = 1024;

/// What [`Snapshotter::cleanup`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupReport {
    /// Directories deleted because no snapshot record refers to them.
    pub removed_dirs: usize,
}

/// The snapshot store of one daemon root.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    snapshots_dir: PathBuf,
    layout: Layout,
    store: Arc<Store>,
    usage_meter: UsageMeter,
    reaper: Reaper,
    tmp_seq: AtomicU64,
    /// Whether the process umask takes bits off 0755 (then new `fs` dirs need a chmod).
    umask_clears_0755: bool,
    lazy: Option<Arc<LazyLayers>>,
    /// Access traces of containers on lazy layers (see `runs`).
    recorder: Option<Arc<Recorder>>,
}

impl Snapshotter {
    /// Opens the snapshotter rooted at `root`, creating it (mode 0700) if needed, and sweeps
    /// leftovers of interrupted Prepare and Remove calls.
    pub fn open(root: &Path) -> Result<Snapshotter> {
        let snapshots_dir = root.join("snapshots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&snapshots_dir)
            .map_err(Error::io("create snapshot directory", &snapshots_dir))?;
        // The store's lock comes first: a second daemon on this root must fail before it
        // touches anything, in particular the first one's live mounts.
        let store = Arc::new(Store::open(&root.join("metadata.db"))?);
        // A daemon killed while layers were mounted leaves dead FUSE mounts (every access fails
        // with ENOTCONN); detach them before anything below walks or deletes those directories.
        let stale = lazy::mount::fuse_mounts_under(&snapshots_dir)
            .map_err(Error::io("read mount table for", &snapshots_dir))?;
        for point in &stale {
            lazy::mount::unmount(point).map_err(Error::io("unmount stale FUSE mount", point))?;
        }
        if !stale.is_empty() {
            tracing::info!(
                mounts = stale.len(),
                "detached FUSE mounts left by an earlier run"
            );
        }
        let layout = Layout::new(snapshots_dir.clone());
        let usage_meter = UsageMeter::start(Arc::clone(&store), layout.clone())?;
        let sn = Snapshotter {
            root: root.to_path_buf(),
            layout,
            snapshots_dir,
            store,
            usage_meter,
            reaper: Reaper::start()?,
            tmp_seq: AtomicU64::new(0),
            umask_clears_0755: umask_clears_0755(),
            lazy: None,
            recorder: None,
        };
        // Leftovers of interrupted Prepare and Remove calls: renamed at once and deleted by the
        // reaper, so a large leftover never delays readiness.
        let swept = sn
            .move_to_trash(|name| name.starts_with(TMP_PREFIX) || name.starts_with(TRASH_PREFIX))?;
        if !swept.is_empty() {
            tracing::info!(
                dirs = swept.len(),
                "deleting leftovers of interrupted prepare/remove calls in the background"
            );
        }
        for dir in swept {
            sn.reaper.delete(dir);
        }
        // Commits whose usage a crash left unmeasured.
        for (id, key) in sn.store.read()?.pending_usage()? {
            sn.usage_meter.measure(id, key);
        }
        Ok(sn)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Enables lazy pulling and mounts every remote layer the store records (blocking). A layer
    /// that cannot be mounted is logged and left unmounted: its snapshot reads as empty until it
    /// is removed and pulled again.
    pub fn enable_lazy(&mut self, lazy: Arc<LazyLayers>) -> Result<()> {
        let layers = self.store.read()?.remote_layers()?;
        let mut mounted = 0;
        for (id, key, remote) in &layers {
            let fs_dir = self.layout.fs(*id);
            match lazy.mount(*id, &fs_dir, remote, None) {
                Ok(()) => mounted += 1,
                Err(e) => tracing::error!(
                    snapshot = %key,
                    layer = %remote.layer_digest,
                    error = %e,
                    "could not mount remote layer again; remove the image and pull it again"
                ),
            }
        }
        if !layers.is_empty() {
            tracing::info!(
                mounted,
                of = layers.len(),
                "remote layers mounted from metadata"
            );
        }
        self.lazy = Some(lazy);
        Ok(())
    }

    /// The lazy-pulling subsystem, if enabled.
    pub fn lazy(&self) -> Option<&Arc<LazyLayers>> {
        self.lazy.as_ref()
    }

    /// The trace recorder, if traces are recorded.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    /// Starts a traced run at each Prepare on lazily mounted layers, ended by its Remove.
    pub fn enable_trace(&mut self, recorder: Arc<Recorder>) {
        self.recorder = Some(recorder);
    }

    /// Writes the traces of runs still active, then unmounts every lazy layer (shutdown).
    pub fn shutdown(&self) {
        if let Some(recorder) = &self.recorder {
            recorder.shutdown();
        }
        if let Some(lazy) = &self.lazy {
            lazy.unmount_all();
        }
    }

    /// Commits a resolved remote layer as `name` (the chain ID containerd asked for) on
    /// `parent`, mounted lazily. Returns [`Error::AlreadyExists`] if `name` exists, which
    /// containerd takes as "done", like success.
    pub fn prepare_remote(
        &self,
        name: &str,
        parent: &str,
        mut labels: Labels,
        resolved: Resolved,
    ) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Err(Error::InvalidArgument("lazy pulling is disabled".into()));
        };
        check_key("name", name)?;
        if !parent.is_empty() {
            check_key("parent", parent)?;
        }
        labels.insert(
            lazy::labels::REMOTE.into(),
            lazy::labels::REMOTE_VALUE.into(),
        );
        check_labels(&labels)?;
        let mut tx = self.store.write()?;
        let tmp = self.make_tmp_dir(Kind::Committed)?;
        let result = (|| {
            let snap = tx.create_remote(name, parent, labels, resolved.remote.clone())?;
            let dir = self.layout.dir(snap.id);
            remove_tree(&dir).map_err(Error::io("remove uncommitted leftover", &dir))?;
            fs::rename(&tmp, &dir).map_err(Error::io("rename new snapshot dir to", &dir))?;
            let fs_dir = self.layout.fs(snap.id);
            let mut index = resolved.index.clone();
            let inherited = self.inherited_dirs(&index, &snap.parent_ids);
            for d in &inherited {
                d.apply(&mut index);
            }
            lazy.install(&resolved, &inherited)
                .and_then(|()| {
                    lazy.mount(snap.id, &fs_dir, &resolved.remote, Some(Arc::new(index)))
                })
                .map_err(|e| Error::Lazy(e.to_string()))?;
            lazy.count_resolve_bytes(&resolved);
            Ok(snap)
        })();
        let snap = match result {
            Ok(snap) => snap,
            Err(e) => {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = tx.commit() {
            lazy.unmount(snap.id);
            let _ = remove_tree(&self.layout.dir(snap.id));
            return Err(e);
        }
        Ok(())
    }

    /// Creates an active snapshot on `parent` (may be empty) and returns its mounts.
    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    /// Creates a read-only view of `parent` and returns its mounts.
    pub fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let snap = self.store.read()?.get_snapshot(key)?;
        Ok(self.layout.mounts(&snap))
    }

    /// Commits active snapshot `key` as `name`, with its disk usage: measured here for a small
    /// upper dir, right after by the `augur-usage` thread for one of more than
    /// [`INLINE_USAGE_INODES`] entries (see `usage_meter`), so a large layer's walk is off the
    /// pull's path while a small commit costs no second transaction.
    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key("name", name)?;
        check_key("key", key)?;
        check_labels(&labels)?;
        // Measure before taking the write lock: the upper dir is not written during a commit
        // (containerd's contract), and a walk must not stall every other writer.
        let (id, info, _) = self.store.read()?.get_info(key)?;
        if info.kind != Kind::Active {
            return Err(Error::NotActive {
                key: key.into(),
                kind: info.kind.as_str(),
            });
        }
        let fs_dir = self.layout.fs(id);
        let usage = disk_usage_within(&fs_dir, INLINE_USAGE_INODES)
            .map_err(Error::io("measure disk usage of", &fs_dir))?;
        let mut tx = self.store.write()?;
        tx.commit_active(key, name, usage, labels)?;
        tx.commit()?;
        if usage.is_none() {
            self.usage_meter.measure(id, name.to_owned());
        }
        Ok(())
    }

    /// Removes a snapshot that has no children. Its directory is moved aside and deleted in the
    /// background, by the reaper.
    pub fn remove(&self, key: &str) -> Result<()> {
        check_key("key", key)?;
        let mut tx = self.store.write()?;
        let rec = tx.remove(key)?;
        tx.commit()?;
        let id = rec.id;
        if let Some(recorder) = &self.recorder {
            recorder.snapshot_removed(key);
        }
        if let (Some(lazy), Some(_)) = (&self.lazy, &rec.remote) {
            // Before the reaper sees it: it must never walk into a live FUSE mount.
            lazy.unmount(id);
        }
        let trash = self.snapshots_dir.join(format!("{TRASH_PREFIX}{id}"));
        self.reaper.move_and_delete(self.layout.dir(id), trash);
        Ok(())
    }

    /// The snapshot's info.
    pub fn stat(&self, key: &str) -> Result<Info> {
        check_key("key", key)?;
        Ok(self.store.read()?.get_info(key)?.1)
    }

    /// Updates labels by containerd field paths (`labels`, `labels.<key>`; empty = all labels).
    pub fn update(&self, key: &str, labels: &Labels, fieldpaths: &[String]) -> Result<Info> {
        check_key("name", key)?;
        check_labels(labels)?;
        let mut tx = self.store.write()?;
        let info = tx.update(key, labels, fieldpaths)?;
        tx.commit()?;
        Ok(info)
    }

    /// Disk usage: measured now for an active snapshot, as recorded at commit otherwise.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        check_key("key", key)?;
        let read = self.store.read()?;
        let (id, info, usage) = read.get_info(key)?;
        // A committed snapshot not measured yet is measured now: it never changes.
        if info.kind != Kind::Active && !read.usage_pending(key)? {
            return Ok(usage);
        }
        drop(read);
        let fs_dir = self.layout.fs(id);
        disk_usage(&fs_dir).map_err(Error::io("measure disk usage of", &fs_dir))
    }

    /// Every snapshot matching any of `filters` (none = all), in key order.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filter = Filter::parse_all(filters)?;
        let mut out = Vec::new();
        self.store.read()?.walk(&filter, |info| {
            out.push(info);
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes every directory under `snapshots/` that no snapshot record refers to (`trash-*`
    /// directories are left to the reaper, which is already deleting them).
    pub fn cleanup(&self) -> Result<CleanupReport> {
        // Decide under the write lock, as containerd does (a Prepare creates and renames its
        // directory inside its transaction, so none is half-way while we look), but only rename
        // there: the slow deletion runs after the lock is released, so writers never wait on it.
        let tx = self.store.write()?;
        let ids = tx.id_map()?;
        // `trash-*` directories belong to the reaper (queued by Remove or by the start-up
        // sweep); deleting them here too would race it over the same tree.
        let doomed = self.move_to_trash(|name| {
            !name.starts_with(TRASH_PREFIX)
                && name
                    .parse::<u64>()
                    .map_or(true, |id| !ids.contains_key(&id))
        })?;
        let mut doomed = doomed;
        if let Some(lazy) = &self.lazy {
            doomed.extend(self.unused_layer_dirs(lazy, &tx)?);
        }
        drop(tx);
        for dir in &doomed {
            remove_tree(dir).map_err(Error::io("remove", dir))?;
        }
        let removed_dirs = doomed.len();
        if removed_dirs > 0 {
            tracing::info!(
                dirs = removed_dirs,
                "cleanup removed unreferenced snapshot directories"
            );
        }
        Ok(CleanupReport { removed_dirs })
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        if !parent.is_empty() {
            check_key("parent", parent)?;
        }
        check_labels(&labels)?;
        let started = std::time::Instant::now();
        let traced = (kind == Kind::Active && self.recorder.is_some()).then(|| labels.clone());
        let mut tx = self.store.write()?;
        let tmp = self.make_tmp_dir(kind)?;
        let result = (|| {
            let snap = tx.create(kind, key, parent, labels)?;
            if let Some(&pid) = snap.parent_ids.first() {
                copy_owner(&self.layout.fs(pid), &tmp.join("fs"))?;
            }
            let dir = self.layout.dir(snap.id);
            place_new_dir(&tmp, &dir)?;
            Ok(snap)
        })();
        let snap = match result {
            Ok(snap) => snap,
            Err(e) => {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = tx.commit() {
            let _ = remove_tree(&self.layout.dir(snap.id));
            return Err(e);
        }
        if let (Some(labels), Some(lazy), Some(recorder)) = (traced, &self.lazy, &self.recorder)
            && let Some(run) = runs::run_start(lazy, key, &snap.parent_ids, &labels, started)
        {
            recorder.run_started(run);
        }
        Ok(self.layout.mounts(&snap))
    }

    /// What each implicit directory of `index` inherits from the same directory in the layers
    /// below (`parent_ids`, topmost first), as containerd's unpacking would give it.
    fn inherited_dirs(
        &self,
        index: &crate::estargz::LayerIndex,
        parent_ids: &[u64],
    ) -> Vec<InheritedDir> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut out = Vec::new();
        for &node in index.implicit_dirs() {
            let rel = index.path_of(node);
            let rel = rel.strip_prefix("/").unwrap_or(&rel);
            let found = parent_ids.iter().find_map(|&pid| {
                let path = self.layout.fs(pid).join(rel);
                Some((fs::symlink_metadata(&path).ok()?, path))
            });
            if let Some((m, path)) = found.filter(|(m, _)| m.is_dir()) {
                out.push(InheritedDir {
                    node,
                    mode: m.permissions().mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime_secs: m.mtime(),
                    mtime_nanos: m.mtime_nsec().clamp(0, 999_999_999) as u32,
                    xattrs: copied_up_xattrs(&path),
                });
            }
        }
        out
    }

    /// Moves aside the `layers/` entries no remote snapshot record refers to (their snapshots
    /// were removed); the caller deletes them. Runs under the store's write lock.
    fn unused_layer_dirs(
        &self,
        lazy: &LazyLayers,
        tx: &crate::store::WriteTxn,
    ) -> Result<Vec<PathBuf>> {
        let used: std::collections::HashSet<PathBuf> = tx
            .remote_layers()?
            .iter()
            .map(|(_, _, r)| lazy.layer_dir(&r.layer_digest))
            .collect();
        let dir = lazy.layers_dir();
        let mut moved = Vec::new();
        for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
            let entry = entry.map_err(Error::io("list", dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&path) || name.starts_with(TRASH_PREFIX) {
                continue;
            }
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let trash = dir.join(format!("{TRASH_PREFIX}{seq}-{name}"));
            fs::rename(&path, &trash).map_err(Error::io("move aside", &path))?;
            moved.push(trash);
        }
        Ok(moved)
    }

    fn make_tmp_dir(&self, kind: Kind) -> Result<PathBuf> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .snapshots_dir
            .join(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
        let fs_dir = tmp.join("fs");
        let mut mkdir = fs::DirBuilder::new();
        mkdir.mode(0o755);
        mkdir.create(&tmp).map_err(Error::io("create", &tmp))?;
        mkdir
            .create(&fs_dir)
            .map_err(Error::io("create", &fs_dir))?;
        // The container's `/` must be 0755 whatever umask the daemon was started with.
        if self.umask_clears_0755 {
            fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("chmod", &fs_dir))?;
        }
        if kind == Kind::Active {
            let work = tmp.join("work");
            fs::DirBuilder::new()
                .mode(0o711)
                .create(&work)
                .map_err(Error::io("create", &work))?;
        }
        Ok(tmp)
    }

    /// Renames entries of `snapshots/` that `doomed` selects to `trash-…` names (so no later
    /// snapshot can collide with them) and returns the new paths, for the caller to delete.
    fn move_to_trash(&self, doomed: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
        let read =
            fs::read_dir(&self.snapshots_dir).map_err(Error::io("list", &self.snapshots_dir))?;
        let mut moved = Vec::new();
        for entry in read {
            let entry = entry.map_err(Error::io("list", &self.snapshots_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !doomed(&name) {
                continue;
            }
            if name.starts_with(TRASH_PREFIX) {
                moved.push(entry.path());
                continue;
            }
            // The sequence number keeps the name unique even if an older `trash-swept-*` of the
            // same entry is still being deleted.
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let trash = self
                .snapshots_dir
                .join(format!("{TRASH_PREFIX}swept-{pid}-{seq}-{name}"));
            match fs::rename(entry.path(), &trash) {
                Ok(()) => moved.push(trash),
                // The reaper took it first (a removed snapshot it is moving aside): its job now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("move aside", entry.path())(e)),
            }
        }
        Ok(moved)
    }
}

/// The xattrs containerd's unpacking copies from a lower directory to an implicit one
/// (`copyUpXAttrs`): all but `trusted.*`. One that cannot be read is left out (containerd
/// skips unsupported ones), and so is a name that is not UTF-8 (the saved form needs text).
fn copied_up_xattrs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let Ok(names) = xattr::list(dir) else {
        return Default::default();
    };
    names
        .filter_map(|name| name.into_string().ok())
        .filter(|name| !name.starts_with("trusted."))
        .filter_map(|name| Some((name.clone(), xattr::get(dir, &name).ok()??)))
        .collect()
}

/// Gives `dir` the owner of `like` (a new upper dir inherits its parent's root owner, as in
/// containerd, so user-namespaced images keep their ownership).
/// Whether the process umask would take bits off a 0755 directory. Reading the umask means
/// setting it (and back): done once, at open, before any other thread of ours creates files.
fn umask_clears_0755() -> bool {
    use nix::sys::stat::{Mode, umask};
    let mask = umask(Mode::from_bits_truncate(0o022));
    umask(mask);
    mask.bits() & 0o755 != 0
}

/// Renames the new snapshot's `tmp` directory to `dir`. A non-empty directory already there is
/// debris of a crash between such a rename and the commit of an earlier transaction: its id was
/// never committed, so no record refers to it (the caller holds the write lock); it is removed
/// and the rename retried. (Rename first: the debris is rare, and a check would cost every
/// Prepare a syscall.)
fn place_new_dir(tmp: &Path, dir: &Path) -> Result<()> {
    match fs::rename(tmp, dir) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
            ) =>
        {
            remove_tree(dir).map_err(Error::io("remove uncommitted leftover", dir))?;
            fs::rename(tmp, dir).map_err(Error::io("rename new snapshot dir to", dir))
        }
        other => other.map_err(Error::io("rename new snapshot dir to", dir)),
    }
}

fn copy_owner(like: &Path, dir: &Path) -> Result<()> {
    let meta = fs::metadata(like).map_err(Error::io("stat parent", like))?;
    std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))
        .map_err(Error::io("chown", dir))
}

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "snapshot {what} must not be empty"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "snapshot {what} is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.len() + v.len() > MAX_LABEL_BYTES {
            let head: String = k.chars().take(40).collect();
            return Err(Error::InvalidArgument(format!(
                "label {head:?} is {} bytes with its value; the limit is {MAX_LABEL_BYTES}",
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

mod runs;
#[cfg(test)]
mod tests;
