//! Fault injection for streamed uploads' tests: `CEDANA_TEST_FAULT=commit-shard` makes
//! every shard written into an object store's upload fail after [`FAULT_AFTER_BYTES`],
//! as a connection lost mid-stream would, once its multipart upload is open and parts
//! are up: the test checks nothing is listed and no multipart upload is left open.

use std::io::{self, Write};

use super::commit::FAULT_ENV;
use crate::store::{ObjectWriter, StoreError};

/// Bytes a shard takes before it fails: more than two 5 MiB parts.
const FAULT_AFTER_BYTES: u64 = 12 << 20;

/// `w`, failing after [`FAULT_AFTER_BYTES`] when the fault is asked for.
pub(super) fn wrap(w: Box<dyn ObjectWriter>) -> Box<dyn ObjectWriter> {
    let asked = std::env::var(FAULT_ENV)
        .is_ok_and(|spec| spec.split(',').any(|s| s.trim() == "commit-shard"));
    match asked {
        true => Box::new(Failing {
            inner: w,
            left: FAULT_AFTER_BYTES,
        }),
        false => w,
    }
}

struct Failing {
    inner: Box<dyn ObjectWriter>,
    left: u64,
}

impl Write for Failing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.left < data.len() as u64 {
            return Err(io::Error::other(format!(
                "commit-shard (fault injected by {FAULT_ENV})"
            )));
        }
        let n = self.inner.write(data)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for Failing {
    fn finish(self: Box<Self>) -> Result<u64, StoreError> {
        self.inner.finish()
    }
}
