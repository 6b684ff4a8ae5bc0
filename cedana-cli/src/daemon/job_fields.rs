//! The typed columns of a job row: its state and its kind. SQLite keeps the same
//! lower-case strings as before they were typed, so existing databases still read; a
//! value this daemon does not know is an error naming it and the valid ones, never a
//! silent default.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A stored value no variant matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job {what} {value:?} in the store; valid values: {valid}")]
pub struct UnknownValue {
    /// `state` or `kind`.
    pub what: &'static str,
    /// The value found.
    pub value: String,
    /// The values this daemon knows, comma-separated.
    pub valid: String,
}

/// Declares a string-backed enum with its stored names, `FromStr`, `Display` and SQLite
/// conversions; the names are the table, so adding a variant is one line.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in the order they are documented.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name as stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        what: $what,
                        value: s.to_string(),
                        valid: $name::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: UnknownValue| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

stored_enum!(
    /// Whether a job's process runs.
    JobState, "state", {
        /// Its process runs.
        Running = "running",
        /// Stopped with SIGSTOP (`cedana freeze`).
        Frozen = "frozen",
        /// Its process is gone.
        Halted = "halted",
    }
);

stored_enum!(
    /// How a job came to be, which says how it is dumped, restored and watched.
    JobKind, "kind", {
        /// Started by `run process`: the daemon's child.
        Process = "process",
        /// Adopted with `manage`: polled.
        Managed = "managed",
        /// A process tree restored from a path: the daemon's child.
        Restored = "restored",
        /// A runc container (`run runc`, `manage runc`, `restore runc`): polled.
        Runc = "runc",
        /// A container containerd's shim runs (`restore containerd`): polled.
        Containerd = "containerd",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(*k));
        }
        let e = "paused".parse::<JobState>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown job state \"paused\" in the store; valid values: running, frozen, halted"
        );
    }

    #[test]
    fn stored_as_the_old_strings() {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        c.execute_batch("CREATE TABLE t (s TEXT, k TEXT)")
            .expect("table");
        c.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![JobState::Frozen, JobKind::Managed],
        )
        .expect("insert");
        let raw: (String, String) = c
            .query_row("SELECT s, k FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("raw");
        assert_eq!(raw, ("frozen".into(), "managed".into()));
        c.execute("UPDATE t SET s = 'gone'", []).expect("update");
        let e = c
            .query_row("SELECT s FROM t", [], |r| r.get::<_, JobState>(0))
            .expect_err("unknown state");
        assert!(e.to_string().contains("unknown job state \"gone\""), "{e}");
    }
}
