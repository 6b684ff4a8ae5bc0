//! A local journal of the multipart uploads this host has open, so that a crash does not
//! orphan them: S3 keeps an unfinished upload's parts (and bills them) until it is
//! aborted. Each upload is recorded in its own file before it is asked for (bucket and
//! key, durably), its id added once the server gives it; the file is held under an
//! exclusive flock while its writer lives, and removed once the upload is completed or
//! aborted. A file whose lock nobody holds was left by a process that died (a daemon or
//! `--no-server` CLI killed mid-upload): recovery aborts its upload, found by its key
//! (`uploads.rs`) when the process died before it had the id.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Journal files' extension.
const EXT: &str = "upload";

/// One open multipart upload, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Recorded {
    /// Its bucket.
    pub bucket: String,
    /// Its object key.
    pub key: String,
    /// The server's upload id; none while it is being asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The journal directory (owner-only: ids let anyone with credentials add parts).
#[derive(Debug, Clone)]
pub(super) struct Journal {
    dir: PathBuf,
}

/// A recorded upload, locked while its owner lives; [`settle`](Entry::settle) it once
/// the upload is completed or aborted. Dropped unsettled, the record stays for recovery.
#[derive(Debug)]
pub(super) struct Entry {
    path: PathBuf,
    lock: Flock<File>,
}

impl Entry {
    /// Adds the server's id to the record. Not synced: a record that lost it in a crash
    /// still names the key, and recovery finds the upload by that.
    pub(super) fn set_id(&mut self, upload: &Recorded) -> io::Result<()> {
        let text = serde_json::to_vec(upload).map_err(io::Error::other)?;
        self.lock.set_len(0)?;
        self.lock.rewind()?;
        self.lock.write_all(&text)
    }

    /// The upload is finished (completed or aborted): forget it.
    pub(super) fn settle(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An upload left by a process that died, locked by us while we abort it.
#[derive(Debug)]
pub(super) struct Orphan {
    /// What was recorded.
    pub upload: Recorded,
    /// Its record: settle it once the upload is aborted.
    pub entry: Entry,
}

impl Journal {
    /// A journal in `dir` (created on first use).
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where it is.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `upload`, durably, before it is asked for.
    pub(super) fn record(&self, upload: &Recorded) -> io::Result<Entry> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.dir.join(format!(
            "{}-{}.{EXT}",
            std::process::id(),
            crate::image::atomic::unique_suffix()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io::Error::from(e))?;
        let text = serde_json::to_vec(upload).map_err(io::Error::other)?;
        let written = lock.write_all(&text).and_then(|()| lock.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Entry { path, lock })
    }

    /// The uploads whose owner is gone (their record's lock is free), now locked by us.
    /// Unreadable records are removed: they name nothing that could be aborted.
    pub(super) fn orphans(&self) -> Vec<Orphan> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(EXT) {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            // Held: its upload is still being written by a live process.
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let parsed = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Recorded>(&b).ok());
            let entry = Entry { path, lock };
            match parsed {
                Some(upload) => out.push(Orphan { upload, entry }),
                None => entry.settle(),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(n: u8) -> Recorded {
        Recorded {
            bucket: "b".into(),
            key: format!("p/ck/shard-{n}.zst"),
            id: Some(format!("id-{n}")),
        }
    }

    #[test]
    fn only_uploads_whose_owner_is_gone_are_orphans() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let j = Journal::new(tmp.path().join("journal"));
        let live = j.record(&up(0)).expect("record");
        let finished = j.record(&up(1)).expect("record");
        finished.settle();
        // A crashed owner: its record stays, and its lock went with it.
        drop(j.record(&up(2)).expect("record"));
        fs::write(j.dir().join("junk.upload"), b"not json").expect("junk");

        // The live one is held (flock is per open file: this holds as another process would).
        let orphans = j.orphans();
        let found: Vec<_> = orphans.iter().map(|o| o.upload.clone()).collect();
        assert_eq!(found, vec![up(2)]);
        assert!(
            !j.dir().join("junk.upload").exists(),
            "unreadable records go"
        );
        for o in orphans {
            o.entry.settle();
        }
        live.settle();
        assert_eq!(fs::read_dir(j.dir()).expect("ls").count(), 0);
    }

    #[test]
    fn a_record_names_its_key_before_the_id_and_both_after() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let j = Journal::new(tmp.path().join("journal"));
        let asking = Recorded { id: None, ..up(3) };
        // Died while asking for the upload: only the key is known.
        drop(j.record(&asking).expect("record"));
        // Died after the answer: the id replaced the first text, nothing of it is left.
        let mut answered = j.record(&asking).expect("record");
        answered.set_id(&up(3)).expect("set id");
        drop(answered);

        let mut found: Vec<_> = j.orphans().into_iter().map(|o| o.upload).collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(found, vec![asking, up(3)]);
    }
}
