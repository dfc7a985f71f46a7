//! The containerd Snapshots gRPC service: a thin adapter from protobuf to [`Snapshotter`].
//!
//! Each call converts its request, runs the snapshot operation on tokio's blocking pool (it
//! fsyncs and walks directories), and converts the answer; errors become the gRPC codes chosen
//! in [`crate::error`]. Every call is logged at debug with its latency, failures at info, and
//! recorded in `augur_snapshot_operation_duration_seconds{op, code}`.
//!
//! One deliberate exception: Stat and Mounts run inline on the async worker. Each is a single
//! redb read transaction served from redb's in-memory page cache plus string building, with no
//! filesystem syscall; it takes 2–3 µs, while the hand-off to the blocking pool and back costs
//! 30–90 µs on a 2-CPU node (measured in `docs/benchmarks.md`). Anything that touches the
//! snapshot directories, fsyncs, or walks all records (List) stays on the blocking pool.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use augur_proto::snapshots::{self as pb, snapshots_server::Snapshots};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::metrics::hot::HOT;
use crate::mounts::Mount;
use crate::snapshotter::Snapshotter;
use crate::store::{Info, Kind, Labels, Timestamp};
use crate::warm::Warm;

/// How many snapshot infos one List response message carries (containerd's proxy uses 100).
const LIST_BATCH: usize = 100;

/// The gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotService {
    sn: Arc<Snapshotter>,
    warm: Option<Arc<Warm>>,
}

impl SnapshotService {
    /// Serves `sn`.
    pub fn new(sn: Arc<Snapshotter>) -> SnapshotService {
        SnapshotService { sn, warm: None }
    }

    /// Records every remote pull with `warm` (the deployment model learns from them).
    pub fn with_warm(mut self, warm: Option<Arc<Warm>>) -> SnapshotService {
        self.warm = warm;
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::snapshots_server::SnapshotsServer<SnapshotService> {
        pb::snapshots_server::SnapshotsServer::new(self)
    }

    /// Runs `f` on the blocking pool and logs the outcome under `op`.
    async fn run<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Snapshotter) -> Result<T, Error> + Send + 'static,
    {
        let sn = Arc::clone(&self.sn);
        let start = Instant::now();
        let joined = tokio::task::spawn_blocking(move || f(&sn)).await;
        match joined {
            Ok(result) => log_outcome(op, key, start, result),
            Err(join) => {
                tracing::error!(op, key, error = %join, "snapshot operation panicked");
                Err(Status::internal(format!(
                    "{op} {key:?}: internal error: {join}"
                )))
            }
        }
    }
}

impl SnapshotService {
    /// The remote-snapshot handshake: if `labels` ask for a remote layer and it can be mounted
    /// lazily (or already is, e.g. pulled in another containerd namespace), returns the
    /// ALREADY_EXISTS status containerd takes as "the layer is there". `None` means: prepare
    /// normally (not a remote request, lazy pulling off, or the layer cannot be read lazily,
    /// in which case containerd downloads and unpacks it as usual).
    async fn try_remote(&self, key: &str, parent: &str, labels: &Labels) -> Option<Status> {
        let lazy = Arc::clone(self.sn.lazy()?);
        let spec = match crate::lazy::labels::remote_spec(labels) {
            Ok(spec) => spec?,
            Err(e) => {
                tracing::warn!(key, error = %e, "remote-snapshot labels unusable; pulling normally");
                return None;
            }
        };
        if let Some(warm) = &self.warm {
            warm.record(&spec);
        }
        let exists = |target: &str| {
            Status::already_exists(format!("remote layer {target} is mounted lazily"))
        };
        if self
            .sn
            .stat(&spec.target)
            .is_ok_and(|i| i.kind == Kind::Committed)
        {
            return Some(exists(&spec.target));
        }
        let start = Instant::now();
        let resolved = match lazy.resolve(&spec).await {
            Ok(r) => r,
            Err(e) => {
                let level_info = matches!(e, crate::lazy::LazyError::NotLazy(_));
                if level_info {
                    tracing::info!(key, layer = %spec.layer_digest, reason = %e, "not lazy; pulling normally");
                } else {
                    tracing::warn!(key, layer = %spec.layer_digest, error = %e, "cannot mount lazily; pulling normally");
                }
                return None;
            }
        };
        let resolve_ms = start.elapsed().as_millis() as u64;
        let (target, parent, labels) = (spec.target.clone(), parent.to_owned(), labels.clone());
        let result = self
            .run("prepare-remote", key, move |sn| {
                sn.prepare_remote(&target, &parent, labels, resolved)
            })
            .await;
        match result {
            Ok(()) => {
                tracing::info!(
                    key,
                    layer = %spec.layer_digest,
                    snapshot = %spec.target,
                    resolve_ms,
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    "remote layer mounted lazily"
                );
                Some(exists(&spec.target))
            }
            // Committed concurrently by another namespace's pull: as good as ours.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Some(exists(&spec.target)),
            Err(_) => None,
        }
    }
}

/// Runs a gRPC method's body and records its latency and status code in the metrics.
async fn timed<T>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let start = Instant::now();
    let result = call.await;
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    HOT.snapshot_op(op, code, start.elapsed());
    result
}

/// Runs a read-only metadata lookup (no filesystem access) inline; see the module docs.
fn lookup<T>(
    sn: &Snapshotter,
    op: &'static str,
    key: &str,
    f: impl FnOnce(&Snapshotter) -> Result<T, Error>,
) -> Result<T, Status> {
    let start = Instant::now();
    log_outcome(op, key, start, f(sn))
}

/// Logs a finished operation (debug on success, info on failure) and converts its error.
fn log_outcome<T>(
    op: &'static str,
    key: &str,
    start: Instant,
    result: Result<T, Error>,
) -> Result<T, Status> {
    let elapsed_us = start.elapsed().as_micros() as u64;
    match result {
        Ok(v) => {
            tracing::debug!(op, key, elapsed_us, "ok");
            Ok(v)
        }
        Err(e) => {
            let status = Status::from(e);
            tracing::info!(op, key, elapsed_us, code = ?status.code(), error = status.message(), "failed");
            Err(status)
        }
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        timed("prepare", async move {
            let r = req.into_inner();
            let key = r.key.clone();
            let labels = labels(r.labels);
            // The labels decide lazy or not: logged so a pull client's labels can be checked.
            tracing::debug!(key, parent = r.parent, ?labels, "prepare requested");
            if let Some(done) = self.try_remote(&key, &r.parent, &labels).await {
                return Err(done);
            }
            let mounts = self
                .run("prepare", &key, move |sn| {
                    sn.prepare(&r.key, &r.parent, labels)
                })
                .await?;
            Ok(Response::new(pb::PrepareSnapshotResponse {
                mounts: to_pb_mounts(mounts),
            }))
        })
        .await
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        timed("view", async move {
            let r = req.into_inner();
            let key = r.key.clone();
            let mounts = self
                .run("view", &key, move |sn| {
                    sn.view(&r.key, &r.parent, labels(r.labels))
                })
                .await?;
            Ok(Response::new(pb::ViewSnapshotResponse {
                mounts: to_pb_mounts(mounts),
            }))
        })
        .await
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        timed("mounts", async move {
            let key = req.into_inner().key;
            let k = key.clone();
            let mounts = lookup(&self.sn, "mounts", &key, |sn| sn.mounts(&k))?;
            Ok(Response::new(pb::MountsResponse {
                mounts: to_pb_mounts(mounts),
            }))
        })
        .await
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        timed("commit", async move {
            let r = req.into_inner();
            let key = r.key.clone();
            self.run("commit", &key, move |sn| {
                sn.commit(&r.name, &r.key, labels(r.labels))
            })
            .await?;
            Ok(Response::new(()))
        })
        .await
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        timed("remove", async move {
            let key = req.into_inner().key;
            let k = key.clone();
            self.run("remove", &key, move |sn| sn.remove(&k)).await?;
            Ok(Response::new(()))
        })
        .await
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        timed("stat", async move {
            let key = req.into_inner().key;
            let k = key.clone();
            let info = lookup(&self.sn, "stat", &key, |sn| sn.stat(&k))?;
            Ok(Response::new(pb::StatSnapshotResponse {
                info: Some(to_pb_info(info)),
            }))
        })
        .await
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        timed("update", async move {
            let r = req.into_inner();
            let info = r.info.ok_or_else(|| {
                Status::invalid_argument("update needs the snapshot info (name and labels)")
            })?;
            let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
            let name = info.name.clone();
            let updated = self
                .run("update", &name, move |sn| {
                    sn.update(&info.name, &labels(info.labels), &paths)
                })
                .await?;
            Ok(Response::new(pb::UpdateSnapshotResponse {
                info: Some(to_pb_info(updated)),
            }))
        })
        .await
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        timed("list", async move {
            let filters = req.into_inner().filters;
            let shown = filters.join(" | ");
            let infos = self
                .run("list", &shown, move |sn| sn.list(&filters))
                .await?;
            let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
                .chunks(LIST_BATCH)
                .map(|chunk| {
                    Ok(pb::ListSnapshotsResponse {
                        info: chunk.iter().cloned().map(to_pb_info).collect(),
                    })
                })
                .collect();
            let stream: ListStream = Box::pin(futures::stream::iter(batches));
            Ok(Response::new(stream))
        })
        .await
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        timed("usage", async move {
            let key = req.into_inner().key;
            let k = key.clone();
            let u = self.run("usage", &key, move |sn| sn.usage(&k)).await?;
            Ok(Response::new(pb::UsageResponse {
                size: u.size,
                inodes: u.inodes,
            }))
        })
        .await
    }

    async fn cleanup(&self, _req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        timed("cleanup", async move {
            self.run("cleanup", "", |sn| sn.cleanup()).await?;
            Ok(Response::new(()))
        })
        .await
    }
}

fn labels(map: HashMap<String, String>) -> Labels {
    map.into_iter().collect()
}

fn to_pb_mounts(mounts: Vec<Mount>) -> Vec<augur_proto::Mount> {
    mounts
        .into_iter()
        .map(|m| augur_proto::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn to_pb_info(info: Info) -> pb::Info {
    let kind = match info.kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    };
    pb::Info {
        name: info.name,
        parent: info.parent,
        kind: kind as i32,
        created_at: Some(to_pb_time(info.created)),
        updated_at: Some(to_pb_time(info.updated)),
        labels: info.labels.into_iter().collect(),
    }
}

fn to_pb_time(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.secs,
        nanos: i32::try_from(t.nanos).unwrap_or(0),
    }
}
