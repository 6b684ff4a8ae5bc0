//! Runtime options containerd hands the shim with `CreateTaskRequest.options`, decoded by
//! type URL: `containerd.runc.v1.Options` (what `ctr --runc-binary`, CRI's runc options and
//! containerd's runc config produce), `runtimeoptions.v1.Options` (CRI's generic options for
//! non-runc runtime types: a TOML `config_body` or a `config_path`), or nothing. Anything
//! else is refused with a message naming the type. Checkpoint options
//! (`containerd.runc.v1.CheckpointOptions`) are resolved here too.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::{CheckpointOptions, Options as RuncOptions};

use crate::error::{Result, ShimError};
use crate::runtime::CheckpointArgs;

/// Type URLs of `containerd.runc.v1.Options` (with and without the typeurl prefix).
const RUNC_OPTIONS_URLS: &[&str] = &[
    "containerd.runc.v1.Options",
    "io.containerd.runc.v1.Options",
    "type.googleapis.com/containerd.runc.v1.Options",
];
/// Type URLs of CRI's `runtimeoptions.v1.Options`.
const RUNTIME_OPTIONS_URLS: &[&str] = &[
    "runtimeoptions.v1.Options",
    "type.googleapis.com/runtimeoptions.v1.Options",
];

/// Decodes the options of a create request into runc options (defaults when absent).
pub fn decode(any: Option<&Any>) -> Result<RuncOptions> {
    let Some(any) = any else {
        return Ok(RuncOptions::default());
    };
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(RuncOptions::default());
    }
    let url = any.type_url.as_str();
    if RUNC_OPTIONS_URLS.contains(&url) {
        return RuncOptions::parse_from_bytes(&any.value).map_err(|e| {
            ShimError::InvalidArgument(format!("cannot decode runtime options {url}: {e}"))
        });
    }
    if RUNTIME_OPTIONS_URLS.contains(&url) {
        let (config_path, config_body) = parse_runtime_options(&any.value)?;
        let body = if !config_path.is_empty() {
            std::fs::read_to_string(&config_path).map_err(|e| {
                ShimError::InvalidArgument(format!(
                    "runtime options config_path {config_path}: {e}"
                ))
            })?
        } else {
            config_body
        };
        return from_toml(&body);
    }
    Err(ShimError::InvalidArgument(format!(
        "unknown runtime options type {url:?}: io.containerd.cedana.v2 accepts \
         containerd.runc.v1.Options or runtimeoptions.v1.Options"
    )))
}

/// Reads `config_path` (field 2) and `config_body` (field 3) of runtimeoptions.v1.Options.
fn parse_runtime_options(bytes: &[u8]) -> Result<(String, String)> {
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        ShimError::InvalidArgument(format!("cannot decode runtimeoptions.v1.Options: {e}"))
    };
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            18 => path = input.read_string().map_err(bad)?,
            26 => body = input.read_string().map_err(bad)?,
            t => input
                .skip_field(
                    containerd_shim_protos::protobuf::rt::WireType::new(t & 7).ok_or_else(
                        || ShimError::InvalidArgument(format!("bad wire type in tag {t}")),
                    )?,
                )
                .map_err(bad)?,
        }
    }
    Ok((path, body))
}

/// Reads the runc option keys this shim uses from a flat TOML body (`BinaryName`, `Root`,
/// `SystemdCgroup`, `CriuImagePath`, `CriuWorkPath`, `NoPivotRoot`, `NoNewKeyring`).
/// Unknown keys are ignored, as containerd's runc shim does.
fn from_toml(body: &str) -> Result<RuncOptions> {
    let mut o = RuncOptions::default();
    for (n, line) in body.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('[') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ShimError::InvalidArgument(format!(
                "runtime options line {}: expected key = value, got {line:?}",
                n + 1
            )));
        };
        let (key, value) = (key.trim().trim_matches('"'), value.trim());
        let string = || value.trim_matches('"').trim_matches('\'').to_string();
        let boolean = || -> Result<bool> {
            value.parse().map_err(|_| {
                ShimError::InvalidArgument(format!(
                    "runtime options {key}: expected true or false, got {value}"
                ))
            })
        };
        match key {
            "BinaryName" | "binary_name" => o.binary_name = string(),
            "Root" | "root" => o.root = string(),
            "SystemdCgroup" | "systemd_cgroup" => o.systemd_cgroup = boolean()?,
            "CriuImagePath" | "criu_image_path" => o.criu_image_path = string(),
            "CriuWorkPath" | "criu_work_path" => o.criu_work_path = string(),
            "NoPivotRoot" | "no_pivot_root" => o.no_pivot_root = boolean()?,
            "NoNewKeyring" | "no_new_keyring" => o.no_new_keyring = boolean()?,
            _ => {}
        }
    }
    Ok(o)
}

/// Resolves the options of a checkpoint request (`containerd.runc.v1.CheckpointOptions`,
/// or none) into the runtime's checkpoint arguments. The image path is the options' or
/// else the request's path; the work path the options' or else `default_work_path` (the
/// runtime options' `CriuWorkPath`).
pub fn checkpoint_args(
    req: &api::CheckpointTaskRequest,
    default_work_path: &str,
) -> Result<CheckpointArgs> {
    let o = match req.options.as_ref() {
        Some(any) if !any.value.is_empty() || !any.type_url.is_empty() => {
            if !any
                .type_url
                .ends_with("containerd.runc.v1.CheckpointOptions")
            {
                return Err(ShimError::InvalidArgument(format!(
                    "unknown checkpoint options type {:?}: expected \
                     containerd.runc.v1.CheckpointOptions",
                    any.type_url
                )));
            }
            CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                ShimError::InvalidArgument(format!("cannot decode checkpoint options: {e}"))
            })?
        }
        _ => CheckpointOptions::default(),
    };
    let image_path = if o.image_path.is_empty() {
        req.path.clone()
    } else {
        o.image_path.clone()
    };
    if image_path.is_empty() {
        return Err(ShimError::InvalidArgument(
            "checkpoint without an image path".into(),
        ));
    }
    let work_path = if o.work_path.is_empty() {
        default_work_path.to_string()
    } else {
        o.work_path.clone()
    };
    Ok(CheckpointArgs {
        image_path,
        work_path,
        leave_running: !o.exit,
        open_tcp: o.open_tcp,
        external_unix_sockets: o.external_unix_sockets,
        terminal: o.terminal,
        file_locks: o.file_locks,
        empty_namespaces: o.empty_namespaces.clone(),
        cgroups_mode: o.cgroups_mode.clone(),
    })
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::CodedOutputStream;

    use super::*;

    fn any(url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn none_gives_defaults() {
        assert_eq!(decode(None).unwrap().binary_name, "");
    }

    #[test]
    fn runc_options() {
        let o = RuncOptions {
            binary_name: "cedana-runc".into(),
            root: "/run/x".into(),
            ..Default::default()
        };
        let d = decode(Some(&any(
            "containerd.runc.v1.Options",
            o.write_to_bytes().unwrap(),
        )))
        .unwrap();
        assert_eq!(d.binary_name, "cedana-runc");
        assert_eq!(d.root, "/run/x");
    }

    #[test]
    fn runtime_options_toml_body() {
        let mut buf = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut buf);
            out.write_string(1, "").unwrap();
            out.write_string(
                3,
                "BinaryName = \"/usr/bin/runc\"\nSystemdCgroup = false # x\n",
            )
            .unwrap();
            out.flush().unwrap();
        }
        let d = decode(Some(&any("runtimeoptions.v1.Options", buf))).unwrap();
        assert_eq!(d.binary_name, "/usr/bin/runc");
        assert!(!d.systemd_cgroup);
    }

    #[test]
    fn unknown_type_is_refused() {
        let e = decode(Some(&any("example.com/Foo", vec![1, 2]))).unwrap_err();
        assert!(
            e.to_string().contains("unknown runtime options type"),
            "{e}"
        );
        assert!(matches!(e, ShimError::InvalidArgument(_)));
    }

    #[test]
    fn bad_toml_is_refused() {
        assert!(from_toml("SystemdCgroup = maybe").is_err());
        assert!(from_toml("nonsense").is_err());
    }
}
