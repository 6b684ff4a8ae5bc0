//! An image in containerd's image store, resolved through its content store to what a
//! container's root filesystem is built from: the manifest for this host's platform, its
//! layers, the config's layer digests (`diff_ids`) and their chain IDs (the names of the
//! unpacked snapshots), and the config's labels.

use std::collections::HashMap;

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::types::Descriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::client::{not_found, Client};
use super::error::ContainerdError;

/// Manifests and configs are small; a larger blob here is not one.
const MAX_METADATA_BLOB: i64 = 8 << 20;
/// Indexes nest (an index of indexes); deeper than this is a loop.
const MAX_INDEX_DEPTH: usize = 4;

/// An image ready to be unpacked or used.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Its name in the image store.
    pub name: String,
    /// The config blob (which carries the gc references to unpacked snapshots).
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Uncompressed digest of each layer, bottom first.
    pub diff_ids: Vec<String>,
    /// The config's labels (copied onto containers, as containerd's own client does).
    pub labels: HashMap<String, String>,
    /// How the image runs by default (entrypoint, cmd, env, working dir).
    pub defaults: RunDefaults,
}

/// The parts of an image's config that say how its container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RunDefaults {
    /// `KEY=VALUE` entries.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// The program (and its first arguments).
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the entrypoint, or the program when there is none.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

impl ResolvedImage {
    /// Chain ID of each layer stack, bottom first; the last names the whole rootfs.
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids)
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: OciDescriptor,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RunConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
    #[serde(flatten)]
    defaults: RunDefaults,
}

impl From<OciDescriptor> for Descriptor {
    fn from(d: OciDescriptor) -> Self {
        Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: HashMap::new(),
        }
    }
}

impl Client {
    /// Image `name`, resolved for this host; [`ContainerdError::NoImage`] when the
    /// namespace does not have it.
    pub async fn resolve_image(&self, name: &str) -> Result<ResolvedImage, ContainerdError> {
        let req = GetImageRequest { name: name.into() };
        let image = match self.images().get(self.request(req)).await {
            Ok(r) => r.into_inner().image,
            Err(s) if not_found(&s) => None,
            Err(s) => return Err(self.failed("Images.Get", s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Err(ContainerdError::NoImage {
                image: name.into(),
                namespace: self.target().namespace.clone(),
            });
        };
        let manifest = self.manifest_for_host(name, target).await?;
        let config: ImageConfig = self
            .read_json(name, &manifest.config.digest, manifest.config.size)
            .await?;
        Ok(ResolvedImage {
            name: name.into(),
            config: manifest.config.into(),
            layers: manifest.layers.into_iter().map(Into::into).collect(),
            diff_ids: config.rootfs.diff_ids,
            labels: config
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default(),
            defaults: config.config.map(|c| c.defaults).unwrap_or_default(),
        })
    }

    /// The image's manifest: the target itself, or the one an index lists for this
    /// host's platform.
    async fn manifest_for_host(
        &self,
        name: &str,
        mut target: Descriptor,
    ) -> Result<Manifest, ContainerdError> {
        for _ in 0..MAX_INDEX_DEPTH {
            let blob = self.read_blob(name, &target.digest, target.size).await?;
            let value: serde_json::Value =
                serde_json::from_slice(&blob).map_err(|e| bad_image(name, &target.digest, e))?;
            if value.get("manifests").is_none() {
                return serde_json::from_value(value)
                    .map_err(|e| bad_image(name, &target.digest, e));
            }
            let index: Index =
                serde_json::from_value(value).map_err(|e| bad_image(name, &target.digest, e))?;
            let arch = host_architecture();
            let chosen = index.manifests.into_iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == arch)
            });
            target = chosen
                .ok_or_else(|| ContainerdError::Call {
                    call: format!("resolve image {name}"),
                    detail: format!("it has no manifest for linux/{arch}"),
                })?
                .into();
        }
        Err(ContainerdError::Call {
            call: format!("resolve image {name}"),
            detail: format!("its indexes nest deeper than {MAX_INDEX_DEPTH}"),
        })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: &str,
        size: i64,
    ) -> Result<T, ContainerdError> {
        let blob = self.read_blob(name, digest, size).await?;
        serde_json::from_slice(&blob).map_err(|e| bad_image(name, digest, e))
    }

    /// A whole (small) blob from the content store.
    async fn read_blob(
        &self,
        name: &str,
        digest: &str,
        size: i64,
    ) -> Result<Vec<u8>, ContainerdError> {
        if size > MAX_METADATA_BLOB {
            return Err(ContainerdError::Call {
                call: format!("read image {name}"),
                detail: format!("{digest} is {size} bytes, too large for a manifest or config"),
            });
        }
        let req = ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        };
        let read_failed = |s| self.failed(&format!("Content.Read {digest} of image {name}"), s);
        let mut stream = self
            .content()
            .read(self.request(req))
            .await
            .map_err(read_failed)?
            .into_inner();
        let mut blob = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(read_failed)? {
            blob.extend_from_slice(&chunk.data);
        }
        Ok(blob)
    }
}

/// Chain IDs of a layer stack: the first is its diff ID, each next one the digest of
/// "PARENT_CHAIN DIFF_ID" (the OCI image spec's definition).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The OCI name of this host's CPU architecture.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn bad_image(name: &str, digest: &str, e: serde_json::Error) -> ContainerdError {
    ContainerdError::Call {
        call: format!("read image {name}"),
        detail: format!("{digest} is not a valid OCI manifest, index or config: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expected = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1], format!("sha256:{expected}"));
        assert!(chain_ids(&[]).is_empty());
    }
}
