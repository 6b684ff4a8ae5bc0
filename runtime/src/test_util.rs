//! Helpers shared by unit tests.

use std::ffi::OsString;

/// Arguments as strings, for comparing command lines against golden lists.
pub fn strs(v: Vec<OsString>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}
