//! The `augur-reaper` thread: deletes removed snapshots' directories off the request path.
//!
//! Remove renames a snapshot's directory to `snapshots/trash-<id>` (one syscall) and hands it
//! here, so the gRPC call returns without walking a possibly large tree. A trash directory that
//! was not yet deleted when the daemon stopped is swept at the next start.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use crate::error::{Error, Result};
use crate::fsutil::remove_tree;

/// Handle to the reaper thread; dropping it lets the thread finish the queue and exit.
#[derive(Debug)]
pub struct Reaper {
    tx: mpsc::Sender<PathBuf>,
}

impl Reaper {
    /// Starts the thread.
    pub fn start() -> Result<Reaper> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        thread::Builder::new()
            .name("augur-reaper".into())
            .spawn(move || {
                for path in rx {
                    if let Err(e) = remove_tree(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not delete removed snapshot; Cleanup will retry");
                    }
                }
            })
            .map_err(Error::io("spawn reaper thread for", "snapshots/"))?;
        Ok(Reaper { tx })
    }

    /// Queues `path` for deletion.
    pub fn delete(&self, path: PathBuf) {
        // The thread lives as long as the sender; a send can only fail if it panicked, and then
        // the directory stays as trash for the next start to sweep.
        let _ = self.tx.send(path);
    }
}
