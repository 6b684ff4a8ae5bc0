//! Runs a GPU tool (`cuda-checkpoint`, `nvidia-smi`) and returns what it printed, or
//! its complaint.

use std::path::Path;
use std::process::{Command, Stdio};

/// Why a tool run gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolFailure {
    /// It could not be started (not installed, not executable).
    NotFound(String),
    /// It ran and failed: its exit status and its message.
    Failed(String),
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(s) | Self::Failed(s) => f.write_str(s),
        }
    }
}

/// Runs `bin ARGS`; its stdout when it exits 0.
pub fn run(bin: &Path, args: &[&str]) -> Result<String, ToolFailure> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ToolFailure::NotFound(format!("{} cannot be run: {e}", bin.display())))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // Both streams: cuda-checkpoint reports on stdout, nvidia-smi on either.
    let said = [&out.stderr, &out.stdout]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(ToolFailure::Failed(format!(
        "`{} {}` exited with {}: {}",
        bin.display(),
        args.join(" "),
        out.status,
        if said.is_empty() { "no message" } else { &said }
    )))
}
