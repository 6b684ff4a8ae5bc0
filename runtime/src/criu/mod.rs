//! The CRIU driver: RPC over `criu swrk` for dump/restore/version/feature checks.

pub mod options;
