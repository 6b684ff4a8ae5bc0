//! One connection to containerd's gRPC socket, in one namespace, through the typed
//! `containerd-client` crate. Every request carries the `containerd-namespace` header
//! (and, while the plugin creates things, a `containerd-lease` one); a failed call
//! becomes a [`ContainerdError`] naming the call and the container.

use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{CreateRequest as CreateLease, DeleteRequest as DeleteLease};
use tokio::net::UnixStream;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::error::ContainerdError;
use super::target::ContainerdTarget;

/// The gRPC metadata key naming the namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC metadata key naming a lease: what is created under it is safe from
/// containerd's garbage collector until the lease goes.
const LEASE_HEADER: &str = "containerd-lease";
/// Label giving a lease its expiry, so a lease a crashed restore left behind goes too.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// How long a lease lives at most: far longer than unpacking an image and creating a
/// container take.
const LEASE_TTL: Duration = Duration::from_secs(3600);

/// A connection to one containerd, in the namespace of one container.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    target: ContainerdTarget,
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
}

impl Client {
    /// Connects to `target.address`; the calls then act in `target.namespace`, on
    /// container `target.id`.
    pub async fn connect(target: &ContainerdTarget) -> Result<Self, ContainerdError> {
        let namespace = MetadataValue::try_from(target.namespace.as_str()).map_err(|_| {
            ContainerdError::BadNamespace {
                namespace: target.namespace.clone(),
            }
        })?;
        let unreachable = |detail: String| ContainerdError::Unreachable {
            address: target.address.clone(),
            detail,
        };
        // tonic reports a missing socket as a bare "transport error": try it first, for
        // the OS's own words.
        UnixStream::connect(&target.address)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let channel = containerd_client::connect(&target.address)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        Ok(Self {
            channel,
            target: target.clone(),
            namespace,
            lease: None,
        })
    }

    /// The container this client was made for.
    pub fn target(&self) -> &ContainerdTarget {
        &self.target
    }

    /// `msg` as a request in this client's namespace (and lease, if any).
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = &self.lease {
            r.metadata_mut().insert(LEASE_HEADER, lease.clone());
        }
        r
    }

    /// What a failed `call` says to the user: containerd gone, or the call's message.
    pub fn failed(&self, call: &str, status: Status) -> ContainerdError {
        if status.code() == Code::Unavailable {
            return ContainerdError::Unreachable {
                address: self.target.address.clone(),
                detail: status.message().to_string(),
            };
        }
        ContainerdError::Call {
            call: format!("containerd {call} ({})", self.target.id),
            detail: status.message().to_string(),
        }
    }

    /// A copy of this client whose requests run under a new lease, so the snapshots and
    /// content it makes survive garbage collection until a container refers to them;
    /// give it back with [`Client::release`].
    pub async fn leased(&self) -> Result<Client, ContainerdError> {
        let expire = chrono::Utc::now() + LEASE_TTL;
        let id = format!(
            "cedana-{}-{}",
            self.target.id,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let req = CreateLease {
            id: id.clone(),
            labels: [(LEASE_EXPIRE_LABEL.to_string(), expire.to_rfc3339())].into(),
        };
        self.leases()
            .create(self.request(req))
            .await
            .map_err(|s| self.failed("Leases.Create", s))?;
        let lease = MetadataValue::try_from(id.as_str()).map_err(|_| ContainerdError::Call {
            call: "containerd Leases.Create".into(),
            detail: format!("lease id {id:?} is not a valid header value"),
        })?;
        Ok(Client {
            lease: Some(lease),
            ..self.clone()
        })
    }

    /// Deletes this client's lease (best effort: it expires by itself).
    pub async fn release(&self) {
        let Some(lease) = &self.lease else { return };
        let Ok(id) = lease.to_str() else { return };
        let req = DeleteLease {
            id: id.to_string(),
            sync: false,
        };
        let mut r = Request::new(req);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Err(e) = self.leases().delete(r).await {
            tracing::warn!(lease = id, error = %e.message(), "could not delete containerd lease");
        }
    }

    /// The Containers service.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// The Tasks service.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// The Snapshots service.
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// The Images service.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    /// The Content service.
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }

    /// The Diff service.
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    /// The Leases service.
    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
}

/// An error and its sources, `a: b: c` (tonic's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Whether a call failed because what it asked for does not exist.
pub fn not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = dir.path().join("c.sock").display().to_string();
        let t = ContainerdTarget::new("c1", Some(address.clone()), None);
        let e = Client::connect(&t)
            .await
            .err()
            .expect("no containerd there");
        assert!(matches!(e, ContainerdError::Unreachable { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&address) && msg.contains("--containerd-address"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_namespace_that_cannot_be_a_header_is_refused() {
        let t = ContainerdTarget::new("c1", None, Some("bad\nns".into()));
        let e = Client::connect(&t).await.err().expect("refused");
        assert!(matches!(e, ContainerdError::BadNamespace { .. }), "{e:?}");
    }
}
