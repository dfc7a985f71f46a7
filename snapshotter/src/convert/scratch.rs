//! The conversion's temporary directory and its blocking jobs.
//!
//! Every temporary file of a run lives in one directory, `augurctl-convert-XXXXXX` under
//! `--tmp-dir`. [`Scratch::close`] removes it whatever happened (success, error, Ctrl-C), and
//! only once no blocking job can still write into it: jobs run through [`Scratch::blocking`],
//! which holds a read lock of a gate for the job's whole life; `close` raises the cancel flag
//! (jobs check it on every read, see `streams::Verified`), then takes the write lock, which
//! waits for the last job to return. A `kill -9` leaves the directory behind; its name says
//! what it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::RwLock;

use super::ConvertError;

/// The temporary directory and the cancel flag of one conversion.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
    cancel: Arc<AtomicBool>,
    gate: Arc<RwLock<()>>,
    next: AtomicU64,
}

impl Scratch {
    /// A fresh directory under `parent`.
    pub(crate) fn new(parent: &Path) -> Result<Scratch, ConvertError> {
        let dir = tempfile::Builder::new()
            .prefix("augurctl-convert-")
            .tempdir_in(parent)
            .map_err(ConvertError::io(
                "cannot create a temporary directory in (see --tmp-dir)",
                parent,
            ))?;
        Ok(Scratch {
            dir,
            cancel: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(RwLock::new(())),
            next: AtomicU64::new(0),
        })
    }

    /// A new, unused path in the directory; `what` makes its name readable.
    pub(crate) fn file(&self, what: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("{n:04}-{what}"))
    }

    /// The flag blocking jobs poll.
    pub(crate) fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Runs `job` on the blocking pool; `close` waits for it.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, ConvertError> + Send + 'static,
    ) -> Result<T, ConvertError> {
        let pass = self.gate.clone().read_owned().await;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Interrupted);
        }
        let handle = tokio::task::spawn_blocking(move || {
            let _pass = pass;
            job()
        });
        match handle.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ConvertError::Interrupted),
        }
    }

    /// Stops the jobs, waits for them, and removes the directory.
    pub(crate) async fn close(self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _quiet = self.gate.write().await;
        let path = self.dir.path().to_path_buf();
        if let Err(e) = self.dir.close() {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove the temporary directory; remove it by hand");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_waits_for_jobs_and_removes_everything() {
        let parent = tempfile::tempdir().unwrap();
        let s = Scratch::new(parent.path()).unwrap();
        let path = s.file("layer");
        let cancel = s.cancel_flag();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        {
            // A job that keeps writing until it sees the flag, like a conversion.
            let work = s.blocking(move || {
                let _ = started_tx.send(());
                while !cancel.load(Ordering::Relaxed) {
                    std::fs::write(&path, b"still writing").unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                done.store(true, Ordering::Relaxed);
                Ok(())
            });
            tokio::pin!(work);
            tokio::select! {
                _ = &mut work => panic!("the job ended before it was cancelled"),
                started = started_rx => started.unwrap(),
            }
            // Dropped here, as `convert` drops its work on Ctrl-C.
        }
        s.close().await;
        assert!(
            finished.load(Ordering::Relaxed),
            "close returned before the job"
        );
        assert!(
            std::fs::read_dir(parent.path()).unwrap().next().is_none(),
            "the scratch directory is gone"
        );
    }
}
