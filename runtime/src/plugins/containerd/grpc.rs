//! The few containerd gRPC calls `ctr` cannot make: replace a container's spec, create a
//! task from a checkpoint path (runc options `criu_image_path`, which containerd turns
//! into the shim's `Checkpoint`), start it. Hand-written prost messages for exactly the
//! fields used (as `criu/rpc.rs` does for CRIU), over tonic on the unix socket: no
//! containerd client crate, whose tonic/prost versions would have to match ours.

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::error::ContainerdError;
use super::target::ContainerdTarget;

/// The gRPC metadata key naming the namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// Type URL of an OCI spec in a container record (JSON value).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of the runc shim's options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// Type.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Encoded value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `containerd.types.Mount`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Filesystem type.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Source.
    #[prost(string, tag = "2")]
    pub source: String,
    /// Options.
    #[prost(string, repeated, tag = "4")]
    pub options: Vec<String>,
}

/// `containerd.runc.v1.Options`: the fields read or set here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    /// `BinaryName`.
    #[prost(string, tag = "6")]
    pub binary_name: String,
    /// `Root`.
    #[prost(string, tag = "7")]
    pub root: String,
    /// Where the shim's runc restores from.
    #[prost(string, tag = "10")]
    pub criu_image_path: String,
    /// CRIU's work dir for that restore.
    #[prost(string, tag = "11")]
    pub criu_work_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: std::collections::HashMap<String, String>,
    #[prost(message, optional, tag = "5")]
    spec: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    paths: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateContainerRequest {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
    #[prost(message, optional, tag = "2")]
    update_mask: Option<FieldMask>,
}

/// Any response whose fields are not needed.
#[derive(Clone, PartialEq, prost::Message)]
struct Ignored {}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(message, repeated, tag = "3")]
    rootfs: Vec<Mount>,
    #[prost(string, tag = "4")]
    stdin: String,
    #[prost(string, tag = "5")]
    stdout: String,
    #[prost(string, tag = "6")]
    stderr: String,
    #[prost(message, optional, tag = "9")]
    options: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StartRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StartResponse {
    #[prost(uint32, tag = "1")]
    pid: u32,
}

/// A connection to one containerd, in one namespace.
pub struct Client {
    channel: Channel,
    target: ContainerdTarget,
}

impl Client {
    /// Connects to `target.address`.
    pub async fn connect(target: &ContainerdTarget) -> Result<Self, ContainerdError> {
        let unreachable = |detail: String| ContainerdError::Unreachable {
            address: target.address.clone(),
            detail,
        };
        let path = target.address.clone();
        UnixStream::connect(&path)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let channel = Endpoint::from_static("http://[::]:0")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            channel,
            target: target.clone(),
        })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, ContainerdError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let failed = |detail: String| ContainerdError::Command {
            command: format!("containerd {path} ({})", self.target.id),
            detail,
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| failed(e.to_string()))?;
        let mut r = tonic::Request::new(req);
        r.metadata_mut().insert(
            NAMESPACE_HEADER,
            self.target
                .namespace
                .parse()
                .map_err(|_| failed("namespace is not a valid header value".into()))?,
        );
        let codec = tonic::codec::ProstCodec::<Req, Resp>::default();
        grpc.unary(r, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| failed(s.message().to_string()))
    }

    /// Replaces the container's spec (JSON) and sets `labels` (others are kept).
    pub async fn update_spec(
        &self,
        spec: &serde_json::Value,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let mut paths = vec!["spec".to_string()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        let req = UpdateContainerRequest {
            container: Some(Container {
                id: self.target.id.clone(),
                labels,
                spec: Some(Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(spec).unwrap_or_default(),
                }),
            }),
            update_mask: Some(FieldMask { paths }),
        };
        let _: Ignored = self
            .unary("/containerd.services.containers.v1.Containers/Update", req)
            .await?;
        Ok(())
    }

    /// Creates the container's task from `rootfs`, with `options` (runc options naming
    /// the checkpoint), its stdin from the FIFO `stdin`, stdout and stderr to the URI
    /// `out`.
    pub async fn create_task(
        &self,
        rootfs: Vec<Mount>,
        (stdin, out): (&str, &str),
        options: Any,
    ) -> Result<(), ContainerdError> {
        let req = CreateTaskRequest {
            container_id: self.target.id.clone(),
            rootfs,
            stdin: stdin.into(),
            stdout: out.into(),
            stderr: out.into(),
            options: Some(options),
        };
        let _: Ignored = self
            .unary("/containerd.services.tasks.v1.Tasks/Create", req)
            .await?;
        Ok(())
    }

    /// Starts the task (for a checkpointed task: the runtime's restore); its PID.
    pub async fn start_task(&self) -> Result<i32, ContainerdError> {
        let req = StartRequest {
            container_id: self.target.id.clone(),
        };
        let r: StartResponse = self
            .unary("/containerd.services.tasks.v1.Tasks/Start", req)
            .await?;
        Ok(r.pid as i32)
    }
}

/// Decodes standard base64 (how `ctr` prints protobuf bytes).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn decodes_the_runc_options_ctr_prints() {
        // `ctr containers info` of a container run with --runc-binary /work/main/target/debug/cedana-runc.
        let b = base64_decode("MiMvd29yay9tYWluL3RhcmdldC9kZWJ1Zy9jZWRhbmEtcnVuYw==").unwrap();
        let o = RuncOptions::decode(b.as_slice()).unwrap();
        assert_eq!(o.binary_name, "/work/main/target/debug/cedana-runc");
        assert_eq!(o.root, "");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!!!").is_none());
    }

    #[test]
    fn appended_fields_merge_into_recorded_options() {
        let mut v = RuncOptions {
            binary_name: "runc".into(),
            ..Default::default()
        }
        .encode_to_vec();
        v.extend(
            RuncOptions {
                criu_image_path: "/ck".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let o = RuncOptions::decode(v.as_slice()).unwrap();
        assert_eq!(
            (o.binary_name.as_str(), o.criu_image_path.as_str()),
            ("runc", "/ck")
        );
    }
}
