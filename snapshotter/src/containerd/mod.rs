//! # containerd client
//!
//! A small client for containerd's own gRPC API (not the proxy-plugin API the daemon serves),
//! used by `augurctl image rpull` to store an image the way containerd's Go client does.
//!
//! | module | role |
//! |---|---|
//! | this file | [`Containerd`]: the connection, the `containerd-namespace` and `containerd-lease` headers, leases, image records, snapshots (through containerd, so its metadata and GC see them), diff Apply |
//! | [`content`] | the content store: info, labels, blob writes over the `Write` stream |
//! | [`error`] | [`ContainerdError`] |
//!
//! The services are generated from containerd 1.6.20's protos (`augur-proto`). Every request
//! carries the namespace as the `containerd-namespace` header, as `ctr -n` sends it, and, once a
//! lease is set with [`Containerd::with_lease`], the `containerd-lease` header, so everything the
//! calls create belongs to the lease until the image record references it.
//!
//! [`Containerd`] is cheap to clone (one HTTP/2 connection shared) and its methods are async;
//! nothing here blocks.

mod content;
mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use augur_proto::{Descriptor, Mount, diff, images, leases, snapshots};
use hyper_util::rt::TokioIo;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

pub use content::Written;
pub use error::ContainerdError;

/// The socket containerd listens on by default.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The namespace `ctr` uses by default.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Data per `Write` request (containerd's client copies with 1 MiB buffers; gRPC's default
/// message limit is 4 MiB).
const MAX_MESSAGE_DATA: usize = 1 << 20;

const NAMESPACE_HEADER: &str = "containerd-namespace";
const LEASE_HEADER: &str = "containerd-lease";

/// A connection to containerd, in one namespace, optionally under a lease.
#[derive(Debug, Clone)]
pub struct Containerd {
    channel: Channel,
    headers: Headers,
    address: PathBuf,
}

/// The metadata every request carries.
#[derive(Debug, Clone)]
struct Headers {
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = &self.lease {
            md.insert(LEASE_HEADER, lease.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Headers>;

impl Containerd {
    /// Connects to containerd's socket `address`, to work in `namespace`.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Containerd, ContainerdError> {
        let namespace: AsciiMetadataValue =
            MetadataValue::try_from(namespace).map_err(|_| ContainerdError::Call {
                what: format!("use namespace {namespace:?}"),
                status: tonic::Status::invalid_argument(
                    "namespaces are letters, digits, '.', '_' and '-'",
                ),
            })?;
        let path = address.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::1]:0")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| ContainerdError::Connect {
                address: address.to_path_buf(),
                reason: error_chain(&e),
            })?;
        Ok(Containerd {
            channel,
            headers: Headers {
                namespace,
                lease: None,
            },
            address: address.to_path_buf(),
        })
    }

    /// The socket this client talks to.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// A client whose requests all run under lease `id`.
    pub fn with_lease(&self, id: &str) -> Result<Containerd, ContainerdError> {
        let lease = MetadataValue::try_from(id).map_err(|_| ContainerdError::Call {
            what: format!("use lease {id:?}"),
            status: tonic::Status::invalid_argument("lease ids are ASCII"),
        })?;
        let mut c = self.clone();
        c.headers.lease = Some(lease);
        Ok(c)
    }

    /// Creates lease `id` with `labels` (e.g. `containerd.io/gc.expire`).
    pub async fn create_lease(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let req = leases::CreateRequest {
            id: id.to_owned(),
            labels: labels.into_iter().collect(),
        };
        self.leases()
            .create(req)
            .await
            .map_err(ContainerdError::call(format!("create lease {id}")))?;
        Ok(())
    }

    /// Deletes lease `id` (what it held is collected by the next GC unless referenced).
    pub async fn delete_lease(&self, id: &str) -> Result<(), ContainerdError> {
        let req = leases::DeleteRequest {
            id: id.to_owned(),
            sync: false,
        };
        self.leases()
            .delete(req)
            .await
            .map_err(ContainerdError::call(format!("delete lease {id}")))?;
        Ok(())
    }

    /// Creates the image record `name` → `target`, or updates it when it exists (containerd's
    /// `createNewImage`: the target and labels are replaced).
    pub async fn put_image(
        &self,
        name: &str,
        target: Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let image = images::Image {
            name: name.to_owned(),
            labels: labels.into_iter().collect(),
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let what = format!("create image {name}");
        let created = self
            .images()
            .create(images::CreateImageRequest {
                image: Some(image.clone()),
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let req = images::UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                };
                self.images()
                    .update(req)
                    .await
                    .map_err(ContainerdError::call(format!("update image {name}")))?;
                Ok(())
            }
            Err(s) => Err(ContainerdError::call(what)(s)),
        }
    }

    /// `Prepare` on `snapshotter` through containerd.
    pub async fn prepare(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, ContainerdError> {
        let req = snapshots::PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels: labels.clone().into_iter().collect(),
        };
        let resp = self.snapshots().prepare(req).await.map_err(|s| {
            ContainerdError::call(format!("prepare snapshot {key:?} on {snapshotter}"))(s)
        })?;
        Ok(resp.into_inner().mounts)
    }

    /// `Commit` of `key` as `name` on `snapshotter` through containerd.
    pub async fn commit(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let req = snapshots::CommitSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: labels.clone().into_iter().collect(),
        };
        self.snapshots().commit(req).await.map_err(|s| {
            ContainerdError::call(format!(
                "commit snapshot {key:?} as {name} on {snapshotter}"
            ))(s)
        })?;
        Ok(())
    }

    /// The snapshot `key`'s info, or `None` when containerd has none by that name.
    pub async fn stat(
        &self,
        snapshotter: &str,
        key: &str,
    ) -> Result<Option<snapshots::Info>, ContainerdError> {
        let req = snapshots::StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        };
        match self.snapshots().stat(req).await {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(ContainerdError::call(format!(
                "stat snapshot {key} on {snapshotter}"
            ))(s)),
        }
    }

    /// Removes snapshot `key`.
    pub async fn remove(&self, snapshotter: &str, key: &str) -> Result<(), ContainerdError> {
        let req = snapshots::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        };
        self.snapshots().remove(req).await.map_err(|s| {
            ContainerdError::call(format!("remove snapshot {key:?} on {snapshotter}"))(s)
        })?;
        Ok(())
    }

    /// Applies the layer `layer` (which must be in the content store) onto `mounts` with
    /// containerd's diff service; returns the applied (uncompressed) descriptor.
    pub async fn apply(
        &self,
        layer: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<Descriptor, ContainerdError> {
        let what = format!("apply layer {}", layer.digest);
        let req = diff::ApplyRequest {
            diff: Some(layer),
            mounts,
            payloads: Default::default(),
        };
        let resp = diff::diff_client::DiffClient::with_interceptor(
            self.channel.clone(),
            self.headers.clone(),
        )
        .apply(req)
        .await
        .map_err(ContainerdError::call(what.clone()))?;
        resp.into_inner()
            .applied
            .ok_or(ContainerdError::Incomplete {
                what,
                field: "applied descriptor",
            })
    }

    fn content(&self) -> augur_proto::content::content_client::ContentClient<Svc> {
        augur_proto::content::content_client::ContentClient::with_interceptor(
            self.channel.clone(),
            self.headers.clone(),
        )
        .max_decoding_message_size(usize::MAX)
    }

    fn images(&self) -> images::images_client::ImagesClient<Svc> {
        images::images_client::ImagesClient::with_interceptor(
            self.channel.clone(),
            self.headers.clone(),
        )
    }

    fn leases(&self) -> leases::leases_client::LeasesClient<Svc> {
        leases::leases_client::LeasesClient::with_interceptor(
            self.channel.clone(),
            self.headers.clone(),
        )
    }

    fn snapshots(&self) -> snapshots::snapshots_client::SnapshotsClient<Svc> {
        snapshots::snapshots_client::SnapshotsClient::with_interceptor(
            self.channel.clone(),
            self.headers.clone(),
        )
    }
}

/// An error and its sources, for messages (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
