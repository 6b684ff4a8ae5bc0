//! Restore into a new container that asks for it: the annotation
//! `cedana.io/restore-from=PATH` in its OCI spec (Kubernetes passes a pod's or
//! container's `cedana.io/*` annotations through the runtime's `pod_annotations` /
//! `container_annotations`). containerd 1.7's CRI cannot restore (2.1 can), so the shim
//! does: at create it checks the checkpoint against its metadata.json, unpacks an
//! archive into the bundle, and applies the checkpoint's rootfs changes onto the new
//! rootfs; the init is then restored at start instead of started fresh, and kubelet sees
//! an ordinary running container. Anything wrong fails the create with the reason, which
//! CRI shows in the container's status.

use std::fs;
use std::path::{Path, PathBuf};

use cedana_runtime::image::archive::unpack_checkpoint;
use cedana_runtime::image::integrity::{read_metadata, verify_digests, verify_dir};
use cedana_runtime::plugins::runc::{layout, rootfs_diff};

use containerd_shim_protos::shim::oci::Options as RuncOptions;

use crate::error::{Result, ShimError};

/// The annotation naming the checkpoint (a directory or archive on this node).
pub const RESTORE_ANNOTATION: &str = "cedana.io/restore-from";

/// CRI's annotation of a container's kind (`sandbox` for a pod's pause container).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation of a container's name in its pod.
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// Where an archive is unpacked, inside the bundle (removed with it).
const UNPACKED_DIR: &str = "cedana-checkpoint";

/// The checkpoint the bundle's spec asks to be restored from, if any:
/// `cedana.io/restore-from.NAME` for the pod's container NAME, else
/// `cedana.io/restore-from`. kubelet sets only pod annotations, and containerd copies
/// those onto every container of the pod and onto its sandbox: the sandbox never
/// restores, and in a pod of several containers the name picks one.
pub fn requested(bundle: &Path) -> Result<Option<PathBuf>> {
    let path = bundle.join("config.json");
    let bytes = fs::read(&path).map_err(ShimError::io(format!("read {}", path.display())))?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: {e}", path.display())))?;
    let Some(a) = spec.get("annotations") else {
        return Ok(None);
    };
    let get = |key: &str| a.get(key).and_then(|v| v.as_str()).map(str::trim);
    if get(CRI_CONTAINER_TYPE) == Some("sandbox") {
        return Ok(None);
    }
    let named =
        get(CRI_CONTAINER_NAME).and_then(|name| get(&format!("{RESTORE_ANNOTATION}.{name}")));
    Ok(named
        .or_else(|| get(RESTORE_ANNOTATION))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from))
}

/// Checks the checkpoint at `source`, unpacks it into the bundle if it is an archive,
/// applies its rootfs changes onto `rootfs`; returns the CRIU images to restore from.
pub fn prepare(source: &Path, bundle: &Path, rootfs: &Path) -> Result<PathBuf> {
    let fail = |reason: String| ShimError::RestoreFrom {
        path: source.display().to_string(),
        reason,
    };
    if !source.is_absolute() {
        return Err(fail(
            "give an absolute path on this node (the shim does not run in the pod)".into(),
        ));
    }
    let meta = fs::metadata(source).map_err(|e| {
        fail(format!(
            "{e}; the checkpoint must be on this node (made by `cedana dump containerd` or \
             `cedana dump k8s`)"
        ))
    })?;
    let dir = if meta.is_dir() {
        let md = read_metadata(source).map_err(|e| fail(e.to_string()))?;
        verify_dir(source, &md).map_err(|e| fail(format!("the checkpoint is damaged: {e}")))?;
        source.to_path_buf()
    } else {
        let dest = bundle.join(UNPACKED_DIR);
        fs::create_dir_all(&dest).map_err(ShimError::io(format!("create {}", dest.display())))?;
        let unpacked = unpack_checkpoint(source, &dest)
            .map_err(|e| fail(format!("the checkpoint archive is damaged: {e}")))?;
        let md = read_metadata(&dest).map_err(|e| fail(e.to_string()))?;
        verify_digests(&md, &unpacked.digests)
            .map_err(|e| fail(format!("the checkpoint is damaged: {e}")))?;
        if let Some(m) = &unpacked.manifest {
            m.check_metadata(source, &md)
                .map_err(|e| fail(format!("the checkpoint is damaged: {e}")))?;
        }
        dest
    };
    if !layout::is_portable(&dir) {
        return Err(fail(format!(
            "not a container checkpoint: no {}/ with CRIU images",
            layout::CHECKPOINT_DIR
        )));
    }
    let diff = dir.join(layout::ROOTFS_DIFF);
    if diff.exists() {
        rootfs_diff::apply_diff(&diff, rootfs)
            .and_then(|_| {
                let deleted = rootfs_diff::read_deleted(&dir.join(layout::DELETED_FILES))?;
                rootfs_diff::apply_deleted(&deleted, rootfs)
            })
            .map_err(|e| fail(format!("applying its rootfs changes: {e}")))?;
    }
    Ok(layout::images_of(&dir))
}

/// Where a new task restores from: containerd's `checkpoint`, else the runtime options'
/// `CriuImagePath`. containerd 1.7 turns that option into `checkpoint` only for
/// `io.containerd.runc.*` runtimes and hands it unchanged to any other, so the shim reads
/// it itself, as containerd does for runc: `cedana restore containerd` works on this shim.
pub(crate) fn restore_source(checkpoint: &str, options: &RuncOptions) -> Option<PathBuf> {
    [checkpoint, options.criu_image_path.as_str()]
        .into_iter()
        .find(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The CRIU images of the checkpoint the bundle's spec names in its restore annotation
/// (see the module's doc), checked and with its rootfs changes applied; None if it names
/// none.
pub(crate) async fn annotated_restore(
    bundle: &Path,
    rootfs_mounted: bool,
) -> Result<Option<PathBuf>> {
    let Some(source) = requested(bundle)? else {
        return Ok(None);
    };
    let bundle = bundle.to_path_buf();
    let rootfs = if rootfs_mounted {
        bundle.join("rootfs")
    } else {
        // The spec's root (a rootfs given with the bundle, as `ctr run --rootfs`).
        bundle.join(crate::bundle::spec_root(&bundle)?)
    };
    tokio::task::spawn_blocking(move || prepare(&source, &bundle, &rootfs))
        .await
        .map_err(|e| ShimError::Other(format!("restore preparation task: {e}")))?
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(annotations: serde_json::Value) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = serde_json::json!({"ociVersion": "1.0.2", "annotations": annotations});
        fs::write(d.path().join("config.json"), spec.to_string()).expect("spec");
        d
    }

    #[test]
    fn the_annotation_names_the_checkpoint() {
        let d = bundle_with(serde_json::json!({RESTORE_ANNOTATION: "/ck/one"}));
        assert_eq!(
            requested(d.path()).expect("read"),
            Some(PathBuf::from("/ck/one"))
        );
        let d = bundle_with(serde_json::json!({"other": "x", RESTORE_ANNOTATION: " "}));
        assert_eq!(requested(d.path()).expect("read"), None);
    }

    #[test]
    fn pod_annotations_reach_the_named_container_never_the_sandbox() {
        let pod = |kind: &str, name: &str| {
            bundle_with(serde_json::json!({
                CRI_CONTAINER_TYPE: kind,
                CRI_CONTAINER_NAME: name,
                "cedana.io/restore-from.web": "/ck/web",
                RESTORE_ANNOTATION: "/ck/any",
            }))
        };
        let get = |d: tempfile::TempDir| requested(d.path()).expect("read");
        assert_eq!(get(pod("sandbox", "")), None);
        assert_eq!(get(pod("container", "web")), Some(PathBuf::from("/ck/web")));
        assert_eq!(get(pod("container", "db")), Some(PathBuf::from("/ck/any")));
    }

    #[test]
    fn bad_sources_are_refused_with_the_reason() {
        let d = bundle_with(serde_json::json!({}));
        let e = prepare(Path::new("rel/ck"), d.path(), d.path()).expect_err("relative");
        assert!(e.to_string().contains("absolute path"), "{e}");
        let missing = d.path().join("missing");
        let e = prepare(&missing, d.path(), d.path()).expect_err("missing");
        let msg = e.to_string();
        assert!(msg.contains(RESTORE_ANNOTATION), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
        let junk = d.path().join("junk.tar.zst");
        fs::write(&junk, b"not an archive").expect("junk");
        let e = prepare(&junk, d.path(), d.path()).expect_err("junk");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn a_restore_comes_from_the_checkpoint_else_the_options() {
        let mut o = RuncOptions::default();
        assert_eq!(restore_source("", &o), None);
        o.criu_image_path = "/ck/images".into();
        assert_eq!(restore_source("", &o), Some(PathBuf::from("/ck/images")));
        assert_eq!(restore_source("/given", &o), Some(PathBuf::from("/given")));
    }
}
