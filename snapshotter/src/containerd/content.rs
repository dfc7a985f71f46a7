//! containerd's content store: blob info, label updates, and writes over the `Write` stream.
//!
//! A write is one bidirectional stream, driven as containerd's Go client drives it
//! (`content/proxy/content_writer.go`): a STAT opens the session under a ref and announces size
//! and digest (ALREADY_EXISTS: the blob is there), WRITEs append the data, a COMMIT checks size
//! and digest and stores the blob. Every request waits for its answer before the next is sent.
//! Writes always start at offset 0: containerd truncates a half-written ref it kept from an
//! earlier, interrupted pull.

use std::collections::BTreeMap;
use std::time::Duration;

use augur_proto::content as pb;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Containerd, ContainerdError};

/// A ref another writer holds is retried this often (containerd's `OpenWriter` retries too).
const LOCKED_RETRIES: u32 = 10;

/// What [`Containerd::write_content`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The blob was written and committed.
    Committed,
    /// The content store had the blob already; nothing was written.
    AlreadyPresent,
}

impl Containerd {
    /// The blob's labels, or `None` when the content store does not have it.
    pub async fn content_labels(
        &self,
        digest: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ContainerdError> {
        let req = pb::InfoRequest {
            digest: digest.to_owned(),
        };
        match self.content().info(req).await {
            Ok(r) => Ok(Some(
                r.into_inner()
                    .info
                    .map(|i| i.labels.into_iter().collect())
                    .unwrap_or_default(),
            )),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(ContainerdError::call(format!("content info {digest}"))(s)),
        }
    }

    /// Sets `labels` on the blob `digest`, leaving its other labels alone (containerd's
    /// `cs.Update(info, "labels.<key>"…)`).
    pub async fn set_content_labels(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let req = pb::UpdateRequest {
            info: Some(pb::Info {
                digest: digest.to_owned(),
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
            }),
        };
        self.content()
            .update(req)
            .await
            .map_err(ContainerdError::call(format!("label content {digest}")))?;
        Ok(())
    }

    /// Writes the blob `digest` of `size` bytes under the ingest ref `reference`; `open` gives
    /// its data from the start (it is not called when the store has the blob already). The
    /// commit checks size and digest.
    pub async fn write_content<S, E>(
        &self,
        reference: &str,
        digest: &str,
        size: u64,
        open: impl AsyncFnOnce() -> Result<S, E>,
    ) -> Result<Result<Written, E>, ContainerdError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let what = format!("write content {digest} (ref {reference})");
        let Some(mut session) = self.open_writer(reference, digest, size, &what).await? else {
            return Ok(Ok(Written::AlreadyPresent));
        };
        let mut data = match open().await {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let mut offset = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            for piece in chunk.chunks(super::MAX_MESSAGE_DATA) {
                let resp = session
                    .send(pb::WriteContentRequest {
                        action: pb::WriteAction::Write as i32,
                        offset: offset as i64,
                        data: piece.to_vec(),
                        ..Default::default()
                    })
                    .await
                    .map_err(ContainerdError::call(what.clone()))?;
                offset = resp.offset as u64;
            }
        }
        let resp = session
            .send(pb::WriteContentRequest {
                action: pb::WriteAction::Commit as i32,
                total: size as i64,
                offset: offset as i64,
                expected: digest.to_owned(),
                ..Default::default()
            })
            .await;
        match resp {
            Ok(r) if r.digest == digest && r.offset as u64 == size => Ok(Ok(Written::Committed)),
            Ok(r) => Err(ContainerdError::Mismatch {
                expected: format!("{digest} ({size} bytes)"),
                got: format!("{} ({} bytes)", r.digest, r.offset),
            }),
            // Another pull committed the same blob meanwhile.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(Ok(Written::AlreadyPresent)),
            Err(s) => Err(ContainerdError::call(what)(s)),
        }
    }

    /// Opens a write session (retrying while another writer holds the ref); `None` when the
    /// blob is in the store already.
    async fn open_writer(
        &self,
        reference: &str,
        digest: &str,
        size: u64,
        what: &str,
    ) -> Result<Option<WriteSession>, ContainerdError> {
        let mut wait = Duration::from_millis(50);
        for attempt in 0.. {
            let stat = pb::WriteContentRequest {
                action: pb::WriteAction::Stat as i32,
                r#ref: reference.to_owned(),
                total: size as i64,
                expected: digest.to_owned(),
                ..Default::default()
            };
            match WriteSession::open(self, stat).await {
                Ok(s) => return Ok(Some(s)),
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(None),
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && s.message().contains("locked")
                        && attempt < LOCKED_RETRIES =>
                {
                    tracing::debug!(reference, "content ref locked by another writer; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(s) => return Err(ContainerdError::call(what)(s)),
            }
        }
        unreachable!("the loop returns")
    }
}

/// One `Write` stream: requests go in through `tx`, answers come back on `rx`.
struct WriteSession {
    tx: mpsc::Sender<pb::WriteContentRequest>,
    rx: tonic::Streaming<pb::WriteContentResponse>,
}

impl WriteSession {
    /// Starts the stream with `first` (containerd's server answers, and so sends its response
    /// headers, only after the first request) and waits for its answer.
    async fn open(c: &Containerd, first: pb::WriteContentRequest) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(1);
        tx.send(first)
            .await
            .map_err(|_| tonic::Status::internal("write stream closed"))?;
        let rx = c
            .content()
            .write(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut s = WriteSession { tx, rx };
        s.answer().await?;
        Ok(s)
    }

    async fn send(
        &mut self,
        req: pb::WriteContentRequest,
    ) -> Result<pb::WriteContentResponse, tonic::Status> {
        if self.tx.send(req).await.is_err() {
            // The stream ended: its status says why.
            return Err(self
                .answer()
                .await
                .err()
                .unwrap_or_else(|| tonic::Status::internal("containerd closed the write stream")));
        }
        self.answer().await
    }

    async fn answer(&mut self) -> Result<pb::WriteContentResponse, tonic::Status> {
        self.rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::internal("containerd closed the write stream"))
    }
}
