//! The `augur-usage` thread: measures a committed snapshot's disk usage after Commit has
//! answered, and records it.
//!
//! Commit used to walk the upper directory before answering, as containerd's overlayfs does. For
//! an image layer that is every file of the layer (about 6,600 inodes for a Python layer, far
//! more for large ones), all of it on the pull's critical path: the next layer's unpack waits for
//! it. A committed snapshot never changes, so its usage is the same a moment later: Commit now
//! measures small trees itself (up to `INLINE_USAGE_INODES` entries: a second transaction for
//! them slowed the next call more than the walk did) and records larger ones as pending, handed
//! here. `Usage` of a snapshot still pending measures it on
//! the spot, so callers always get the true figure. The measurement is committed without an
//! fsync (it would hold the write lock for one, delaying the next Prepare or Remove): the next
//! durable transaction persists it, and a crash before that leaves the durable pending mark,
//! which is measured again at the next start.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use crate::error::{Error, Result};
use crate::fsutil::disk_usage;
use crate::mounts::Layout;
use crate::store::Store;

/// Handle to the thread; dropping it waits for the thread to finish its queue and exit (so the
/// store it holds is closed when the snapshotter is).
#[derive(Debug)]
pub struct UsageMeter {
    tx: Option<mpsc::Sender<(u64, String)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UsageMeter {
    /// Starts the thread.
    pub fn start(store: Arc<Store>, layout: Layout) -> Result<UsageMeter> {
        let (tx, rx) = mpsc::channel::<(u64, String)>();
        let thread = thread::Builder::new()
            .name("augur-usage".into())
            .spawn(move || {
                for (id, key) in rx {
                    measure(&store, &layout, id, &key);
                }
            })
            .map_err(Error::io("spawn usage thread for", "snapshots/"))?;
        Ok(UsageMeter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues committed snapshot `key` (directory id `id`) for measuring.
    pub fn measure(&self, id: u64, key: String) {
        // A send fails only if the thread panicked; the snapshot then stays pending, and Usage
        // measures it when asked.
        if let Some(tx) = &self.tx {
            let _ = tx.send((id, key));
        }
    }
}

impl Drop for UsageMeter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn measure(store: &Store, layout: &Layout, id: u64, key: &str) {
    let dir = layout.fs(id);
    let usage = match disk_usage(&dir) {
        Ok(u) => u,
        // Removed meanwhile (the reaper took the directory): nothing to record.
        Err(_) if !dir.exists() => return,
        Err(e) => {
            tracing::warn!(key, path = %dir.display(), error = %e, "could not measure a committed snapshot; Usage will measure it when asked");
            return;
        }
    };
    let recorded = store.write().and_then(|mut tx| {
        tx.set_measured_usage(key, id, usage)
            .and_then(|()| tx.commit_lazily())
    });
    if let Err(e) = recorded {
        tracing::warn!(key, error = %e, "could not record a committed snapshot's usage");
    }
}
