//! The limits on what users name things with (job ids, checkpoint ids, checkpoint
//! names), stated once here and checked on both sides: by the CLI's argument parser,
//! before anything is sent, and by the daemon on every request (any gRPC client can
//! reach it). A refusal never echoes an over-long value whole: the daemon's message
//! travels in an HTTP/2 header, and one over 16 KiB broke the connection ("h2 protocol
//! error") instead of saying what was wrong.

use std::ffi::OsStr;

use cedana_runtime::image::layout;

/// Longest job id (it names the job's log file).
pub const MAX_JID_LEN: usize = 64;
/// Longest checkpoint id (the daemon makes 8-character ones).
pub const MAX_CHECKPOINT_ID_LEN: usize = 64;
/// Longest checkpoint name: the engine's limit (it names a file).
pub const MAX_NAME_LEN: usize = layout::MAX_NAME_LEN;

/// What kind of identifier a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A job id (`--jid`, `cedana job ... JID`).
    Job,
    /// A checkpoint id (`cedana checkpoint ... ID`).
    Checkpoint,
    /// A checkpoint name (`--name`).
    Name,
}

/// A refused identifier.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// An id that is empty, too long, or outside the safe alphabet.
    #[error(
        "invalid {what} {shown}: {reason}; use 1 to {max} letters, digits, '-', '_' or '.', \
         not starting with '.'"
    )]
    BadId {
        /// "job id" or "checkpoint id".
        what: &'static str,
        /// The value, abbreviated when long.
        shown: String,
        /// What is wrong with it.
        reason: String,
        /// The limit in bytes.
        max: usize,
    },
    /// A checkpoint name the engine would refuse.
    #[error(transparent)]
    BadName(#[from] cedana_runtime::image::error::ImageError),
}

impl IdKind {
    fn what(self) -> &'static str {
        match self {
            IdKind::Job => "job id",
            IdKind::Checkpoint => "checkpoint id",
            IdKind::Name => "checkpoint name",
        }
    }

    fn max(self) -> usize {
        match self {
            IdKind::Job => MAX_JID_LEN,
            IdKind::Checkpoint => MAX_CHECKPOINT_ID_LEN,
            IdKind::Name => MAX_NAME_LEN,
        }
    }

    /// Checks `value` against this kind's rules.
    pub fn check(self, value: &str) -> Result<(), IdError> {
        if self == IdKind::Name {
            return Ok(layout::validate_name(value)?);
        }
        let reason = if value.is_empty() {
            Some("it is empty".to_string())
        } else if value.len() > self.max() {
            Some("it is too long".to_string())
        } else if value.starts_with('.') {
            Some("it starts with '.'".to_string())
        } else {
            value
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .map(|c| format!("{c:?} is not allowed"))
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(IdError::BadId {
                what: self.what(),
                shown: layout::shown_name(value),
                reason,
                max: self.max(),
            }),
        }
    }
}

/// Checks a job id.
pub fn check_jid(jid: &str) -> Result<(), IdError> {
    IdKind::Job.check(jid)
}

/// Checks a checkpoint id.
pub fn check_checkpoint_id(id: &str) -> Result<(), IdError> {
    IdKind::Checkpoint.check(id)
}

/// Checks a checkpoint name.
pub fn check_name(name: &str) -> Result<(), IdError> {
    IdKind::Name.check(name)
}

/// A clap value parser for an identifier of `kind`. Its refusal is our message alone:
/// clap's own wrapping would print the whole value first.
#[derive(Debug, Clone, Copy)]
pub struct IdParser(pub IdKind);

impl clap::builder::TypedValueParser for IdParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let refuse = |msg: String| {
            let mut cmd = cmd.clone();
            cmd.error(clap::error::ErrorKind::ValueValidation, msg)
        };
        let s = value
            .to_str()
            .ok_or_else(|| refuse(format!("the {} is not valid UTF-8", self.0.what())))?;
        self.0.check(s).map_err(|e| refuse(e.to_string()))?;
        Ok(s.to_string())
    }
}

/// The parser for job ids.
pub fn jid_parser() -> IdParser {
    IdParser(IdKind::Job)
}

/// The parser for checkpoint ids.
pub fn checkpoint_id_parser() -> IdParser {
    IdParser(IdKind::Checkpoint)
}

/// The parser for checkpoint names.
pub fn name_parser() -> IdParser {
    IdParser(IdKind::Name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_within_the_rules_pass() {
        check_jid("web-1.a_b").expect("ok");
        check_jid(&"a".repeat(MAX_JID_LEN)).expect("at the limit");
        check_checkpoint_id("0a1b2c3d").expect("ok");
        check_name("my checkpoint").expect("ok");
    }

    #[test]
    fn a_huge_id_is_refused_without_echoing_it() {
        let huge = "j".repeat(17 << 10);
        let msg = check_jid(&huge).expect_err("too long").to_string();
        assert!(msg.contains("(17408 bytes): it is too long"), "{msg}");
        assert!(msg.contains(&format!("1 to {MAX_JID_LEN}")), "{msg}");
        assert!(
            msg.len() < 400,
            "the message stays short: {} bytes",
            msg.len()
        );
        let msg = check_name(&huge).expect_err("too long").to_string();
        assert!(
            msg.len() < 600,
            "the message stays short: {} bytes",
            msg.len()
        );
        assert!(msg.contains(&MAX_NAME_LEN.to_string()), "{msg}");
    }

    #[test]
    fn bad_characters_and_empty_ids_are_refused() {
        for bad in ["", "../x", ".hidden", "a/b", "a b", "é"] {
            assert!(check_jid(bad).is_err(), "{bad:?}");
            assert!(check_checkpoint_id(bad).is_err(), "{bad:?}");
        }
    }
}
