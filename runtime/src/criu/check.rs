//! `criu check` and `criu check --all`, run through CRIU's command line.

use std::process::{Command, ExitStatus, Stdio};

use super::{CheckReport, Criu, CriuError};

impl Criu {
    /// Run `criu check` (and `criu check --all` for the warnings).
    pub fn check(&self) -> Result<CheckReport, CriuError> {
        let basic = self.run_cli(&["check"])?;
        let all = self.run_cli(&["check", "--all"])?;
        let warnings = if all.status.success() {
            Vec::new()
        } else {
            check_warnings(&all.text)
        };
        Ok(CheckReport {
            ok: basic.status.success(),
            output: basic.text,
            warnings,
        })
    }

    fn run_cli(&self, args: &[&str]) -> Result<CliOutput, CriuError> {
        let out = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CriuError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&err);
        }
        Ok(CliOutput {
            status: out.status,
            text,
        })
    }
}

struct CliOutput {
    status: ExitStatus,
    text: String,
}

/// Warnings from `criu check --all` output: its "Warn"/"Error" lines, without the
/// `(file.c:line): ` prefix. When there are none, the non-empty lines themselves.
pub(super) fn check_warnings(text: &str) -> Vec<String> {
    // CRIU's stdout and stderr are not line-synchronised ("Version: 4.1.1Warn  (..."),
    // so split at the markers too.
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(idx) = ["Warn  (", "Warn (", "Error ("]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
        {
            let piece = &rest[idx..];
            let end = piece[1..]
                .find("Warn  (")
                .or_else(|| piece[1..].find("Error ("))
                .map(|e| e + 1)
                .unwrap_or(piece.len());
            let msg = &piece[..end];
            let msg = match msg.find("): ") {
                Some(p) => &msg[p + 3..],
                None => msg,
            };
            let msg = msg.trim();
            if !msg.is_empty() {
                out.push(msg.to_string());
            }
            rest = &piece[end..];
        }
    }
    if out.is_empty() {
        out = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
    }
    out
}
