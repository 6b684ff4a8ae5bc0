//! Hashing files on a thread of their own as their bytes stream past (while an archive
//! is extracted), so hashing overlaps decompression instead of re-reading afterwards.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::metadata::FileDigest;

/// Hashes files on a thread of its own as their bytes stream past (during extraction),
/// so hashing overlaps decompression instead of re-reading everything afterwards.
pub struct Digester {
    tx: Option<SyncSender<DigestMsg>>,
    thread: Option<JoinHandle<BTreeMap<String, FileDigest>>>,
}

enum DigestMsg {
    Begin(String),
    Data(Vec<u8>),
    End,
}

/// Chunks queued for the hashing thread.
const DIGEST_QUEUE: usize = 8;

impl Digester {
    /// Starts the hashing thread.
    pub fn start() -> Self {
        let (tx, rx) = sync_channel::<DigestMsg>(DIGEST_QUEUE);
        let thread = std::thread::spawn(move || {
            let mut out = BTreeMap::new();
            let mut current: Option<(String, Sha256, u64)> = None;
            for msg in rx {
                match msg {
                    DigestMsg::Begin(rel) => current = Some((rel, Sha256::new(), 0)),
                    DigestMsg::Data(bytes) => {
                        if let Some((_, h, size)) = current.as_mut() {
                            h.update(&bytes);
                            *size += bytes.len() as u64;
                        }
                    }
                    DigestMsg::End => {
                        if let Some((rel, h, size)) = current.take() {
                            let sha256 = hex::encode(h.finalize());
                            out.insert(rel, FileDigest { size, sha256 });
                        }
                    }
                }
            }
            out
        });
        Digester {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, msg: DigestMsg) {
        // A stopped thread shows up as missing digests, which verification reports.
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// A new file, by '/'-joined relative path.
    pub fn begin(&self, rel: String) {
        self.send(DigestMsg::Begin(rel));
    }

    /// The next bytes of the current file.
    pub fn data(&self, bytes: &[u8]) {
        self.send(DigestMsg::Data(bytes.to_vec()));
    }

    /// The current file is complete.
    pub fn end(&self) {
        self.send(DigestMsg::End);
    }

    /// Waits for the hashing to finish; returns every completed file's digest.
    pub fn finish(mut self) -> BTreeMap<String, FileDigest> {
        self.tx.take();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}
