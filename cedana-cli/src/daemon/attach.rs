//! Attach: stream a job's log from the start (or its last 64 KiB), follow what is
//! appended, and finish with the exit code once the job halted and the log is drained.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::error::DaemonError;
use super::identity::{self, Caller};
use super::jobs::{JobManager, Result};
use super::store::JobState;
use crate::proto::AttachChunk;

/// How much of an existing log is replayed first: enough context, bounded.
const REPLAY_BYTES: u64 = 64 * 1024;
/// How often the log is checked for new data.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Largest chunk sent in one message.
const CHUNK_BYTES: usize = 32 * 1024;
/// Messages buffered towards a slow client.
const CHANNEL_DEPTH: usize = 16;

/// The stream an attach RPC returns.
pub type AttachStream = ReceiverStream<std::result::Result<AttachChunk, Status>>;

impl JobManager {
    /// Starts following a job's log.
    pub fn attach(self: &Arc<Self>, caller: &Caller, jid: &str) -> Result<AttachStream> {
        let job = self.owned_job(caller, jid, "attach to")?;
        if job.log_path.is_empty() {
            return Err(DaemonError::InvalidArgument(format!(
                "job {jid} has no log file (adopted with `manage`), so there is nothing to attach to"
            )));
        }
        // As the caller: the log's path is the caller's to change, so root must not
        // follow it to a file the caller may not read.
        let mut file =
            identity::open_read(caller, std::path::Path::new(&job.log_path), "the job log")?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(REPLAY_BYTES);
        file.seek(SeekFrom::Start(start))
            .map_err(|source| DaemonError::Io {
                context: format!("cannot seek in log {}", job.log_path),
                source,
            })?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let (me, jid) = (Arc::clone(self), jid.to_string());
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                // Decide on "halted" before draining, so nothing written before the
                // exit is missed.
                let job = match me.store.get_job(&jid) {
                    Ok(Some(j)) => j,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(Status::not_found(format!("job {jid} was deleted"))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(DaemonError::from(e).into())).await;
                        return;
                    }
                };
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let chunk = AttachChunk {
                                data: buf[..n].to_vec(),
                                done: false,
                                exit_code: None,
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                return; // client went away
                            }
                        }
                        Err(e) => {
                            let _ = tx
                                .send(Err(Status::internal(format!("reading log: {e}"))))
                                .await;
                            return;
                        }
                    }
                }
                if job.state == JobState::Halted {
                    let last = AttachChunk {
                        data: Vec::new(),
                        done: true,
                        exit_code: job.exit_code,
                    };
                    let _ = tx.send(Ok(last)).await;
                    return;
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
