//! The `augur-reaper` thread: moves removed snapshots' directories aside and deletes them, off
//! the request path.
//!
//! Remove commits the record's deletion and hands the directory here, so the gRPC call returns
//! without even the rename. The thread renames `snapshots/<id>` to `snapshots/trash-<id>` (the
//! rename is what claims the tree: a concurrent Cleanup that renamed it first owns it, and the
//! reaper finds nothing) and then deletes it. A directory whose record is gone but that was not
//! yet renamed or deleted when the daemon stopped is swept at the next start or by Cleanup.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use crate::error::{Error, Result};
use crate::fsutil::remove_tree;

/// Work for the thread.
#[derive(Debug)]
enum Job {
    /// Delete this tree (already renamed aside).
    Delete(PathBuf),
    /// Rename `dir` to `trash`, then delete it; nothing if `dir` is gone.
    MoveAndDelete { dir: PathBuf, trash: PathBuf },
}

/// Handle to the reaper thread; dropping it lets the thread finish the queue and exit.
#[derive(Debug)]
pub struct Reaper {
    tx: mpsc::Sender<Job>,
}

impl Reaper {
    /// Starts the thread.
    pub fn start() -> Result<Reaper> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("augur-reaper".into())
            .spawn(move || {
                for job in rx {
                    let path = match job {
                        Job::Delete(path) => path,
                        Job::MoveAndDelete { dir, trash } => match std::fs::rename(&dir, &trash) {
                            Ok(()) => trash,
                            // A concurrent Cleanup got there first and deletes it itself.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => {
                                tracing::warn!(path = %dir.display(), error = %e, "could not move removed snapshot aside; Cleanup will delete it");
                                continue;
                            }
                        },
                    };
                    if let Err(e) = remove_tree(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not delete removed snapshot; Cleanup will retry");
                    }
                }
            })
            .map_err(Error::io("spawn reaper thread for", "snapshots/"))?;
        Ok(Reaper { tx })
    }

    /// Queues `path` (already renamed aside) for deletion.
    pub fn delete(&self, path: PathBuf) {
        // The thread lives as long as the sender; a send can only fail if it panicked, and then
        // the directory stays for the next start (or Cleanup) to sweep.
        let _ = self.tx.send(Job::Delete(path));
    }

    /// Queues a removed snapshot's directory: renamed to `trash`, then deleted.
    pub fn move_and_delete(&self, dir: PathBuf, trash: PathBuf) {
        let _ = self.tx.send(Job::MoveAndDelete { dir, trash });
    }
}
