//! Kubernetes nodes: pods through containerd's CRI (`cri`), the `cedana` runtime in
//! containerd's config, and installing it (and our binaries) into a host's root from the
//! helper DaemonSet (`cedana k8s-helper`).

pub mod containerd_config;
pub mod cri;
pub mod install;
