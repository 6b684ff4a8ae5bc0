//! The storage seam's acceptance (issue 9): a toy in-memory checkpoint store, defined
//! entirely in this file and added to the engine with one registration line, that a real
//! dump and a real restore of a real process go through (real CRIU). The counter carries
//! on from its last value, packed and as a directory; nothing is left on local disk.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedana_e2e::*;
use cedana_runtime::engine::{DumpRequest, Engine, RestoreRequest};
use cedana_runtime::image::compression::Compression;
use cedana_runtime::store::{
    CheckpointStore, FileInfo, Listed, Location, ObjectWriter, Shape, Stat, StoreError, Upload,
};

/// Objects by key (`BUCKET/PREFIX/NAME[/FILE]`), as an object store holds them.
type Objects = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// The toy backend: a map of objects. A directory checkpoint is visible once its
/// metadata.json is (its last object); a commit never replaces a checkpoint.
#[derive(Debug, Default)]
struct MemStore {
    objects: Objects,
}

impl MemStore {
    fn keys(&self) -> Vec<String> {
        self.objects.lock().expect("lock").keys().cloned().collect()
    }
}

fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn not_found(at: &Location) -> StoreError {
    StoreError::NotFound {
        location: at.to_string(),
    }
}

impl CheckpointStore for MemStore {
    fn begin(&self, at: &Location, _shape: Shape) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(MemUpload {
            at: at.clone(),
            objects: Arc::clone(&self.objects),
            pending: Arc::default(),
        }))
    }

    fn stat(&self, at: &Location) -> Result<Option<Stat>, StoreError> {
        let objects = self.objects.lock().expect("lock");
        let key = at.rest();
        if let Some(o) = objects.get(&key) {
            return Ok(Some(Stat {
                shape: Shape::Packed,
                size_bytes: o.len() as u64,
            }));
        }
        if !objects.contains_key(&format!("{key}/metadata.json")) {
            return Ok(None);
        }
        let size_bytes = objects
            .iter()
            .filter(|(k, _)| under(k, &key))
            .map(|(_, v)| v.len() as u64)
            .sum();
        Ok(Some(Stat {
            shape: Shape::Dir,
            size_bytes,
        }))
    }

    fn open(&self, at: &Location, rel: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let key = match rel {
            "" => at.rest(),
            rel => format!("{}/{rel}", at.rest()),
        };
        let objects = self.objects.lock().expect("lock");
        let bytes = objects.get(&key).ok_or_else(|| not_found(at))?;
        Ok(Box::new(Cursor::new(bytes.clone())))
    }

    fn files(&self, at: &Location) -> Result<Vec<FileInfo>, StoreError> {
        let key = at.rest();
        let objects = self.objects.lock().expect("lock");
        Ok(objects
            .iter()
            .filter(|(k, _)| under(k, &key))
            .map(|(k, v)| FileInfo {
                rel: k[key.len() + 1..].to_string(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn list(&self, dir: &Location) -> Result<Vec<Listed>, StoreError> {
        let prefix = format!("{}/", dir.rest());
        let objects = self.objects.lock().expect("lock");
        let mut out: Vec<Listed> = Vec::new();
        for key in objects.keys() {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let (name, shape) = match rest.split_once('/') {
                None => (rest, Shape::Packed),
                Some((name, "metadata.json")) => (name, Shape::Dir),
                Some(_) => continue,
            };
            out.push(Listed {
                name: name.to_string(),
                location: dir.join(name),
                shape,
            });
        }
        Ok(out)
    }

    fn delete(&self, at: &Location) -> Result<(), StoreError> {
        let key = at.rest();
        self.objects
            .lock()
            .expect("lock")
            .retain(|k, _| *k != key && !under(k, &key));
        Ok(())
    }
}

/// A checkpoint being written: its objects wait here until the commit.
#[derive(Debug)]
struct MemUpload {
    at: Location,
    objects: Objects,
    pending: Objects,
}

impl Upload for MemUpload {
    fn location(&self) -> &Location {
        &self.at
    }

    fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let key = match rel {
            "" => self.at.rest(),
            rel => format!("{}/{rel}", self.at.rest()),
        };
        Ok(Box::new(MemWriter {
            key,
            bytes: Vec::new(),
            pending: Arc::clone(&self.pending),
        }))
    }

    fn commit(self: Box<Self>) -> Result<Location, StoreError> {
        let key = self.at.rest();
        let mut objects = self.objects.lock().expect("lock");
        if objects.keys().any(|k| *k == key || under(k, &key)) {
            return Err(StoreError::Exists {
                location: self.at.to_string(),
            });
        }
        objects.append(&mut self.pending.lock().expect("lock"));
        Ok(self.at.clone())
    }
}

struct MemWriter {
    key: String,
    bytes: Vec<u8>,
    pending: Objects,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemWriter {
    fn finish(self: Box<Self>) -> Result<u64, StoreError> {
        let len = self.bytes.len() as u64;
        self.pending
            .lock()
            .expect("lock")
            .insert(self.key, self.bytes);
        Ok(len)
    }
}

/// This process's scratch and fetch dirs left in the temp dir (there must be none).
fn leftovers() -> Vec<String> {
    let mine = format!(".{:x}-", std::process::id());
    dir_names(&std::env::temp_dir())
        .into_iter()
        .filter(|n| n.starts_with(".cedana-") && n.contains(&mine))
        .collect()
}

#[test]
fn a_dump_and_a_restore_go_through_an_in_memory_store() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("counter.log");
    let mut w = Workload::start(&log, &["counter"]);
    wait_count_above(&log, 2);
    let mut config = cedana_config::Config::default();
    config.checkpoint.dir = env.checkpoints();
    let store = Arc::new(MemStore::default());
    // The one registration line.
    let engine = Engine::new(config).with_store("mem", store.clone());
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let dir = "mem://bucket/cks";

    // Packed (zstd): one object.
    let dumped = rt
        .block_on(engine.dump(DumpRequest {
            pid: w.pid,
            dir: Some(dir.into()),
            name: Some("ck1".into()),
            compression: Some(Compression::Zstd),
            ..Default::default()
        }))
        .expect("dump into the memory store");
    w.reap();
    assert_eq!(dumped.path, PathBuf::from("mem://bucket/cks/ck1.tar.zst"));
    assert_eq!(store.keys(), ["bucket/cks/ck1.tar.zst"]);
    let last = last_count(&log).expect("counted");
    let restored = rt
        .block_on(engine.restore(RestoreRequest {
            path: dumped.path.clone(),
            ..Default::default()
        }))
        .expect("restore from the memory store");
    let guard = KillOnDrop(restored.pid);
    assert_eq!(
        next_after(&log, last),
        last + 1,
        "the restored counter restarted"
    );
    let now = wait_count_above(&log, last + 2);

    // A directory (no compression): one object per file, metadata.json committing it.
    let again = rt
        .block_on(engine.dump(DumpRequest {
            pid: restored.pid,
            dir: Some(dir.into()),
            name: Some("ck2".into()),
            compression: Some(Compression::None),
            ..Default::default()
        }))
        .expect("dump the restored counter");
    std::mem::forget(guard);
    // Ours (rst_sibling): reap it so its PID is free for the next restore.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(restored.pid), None);
    assert_eq!(again.path, PathBuf::from("mem://bucket/cks/ck2"));
    assert!(store
        .keys()
        .contains(&"bucket/cks/ck2/metadata.json".to_string()));
    // Taken at or after `now` (a dump may catch the counter before its next line); the
    // restore below checks it carries on from exactly here.
    let last = last_count(&log).expect("counted");
    assert!(
        last >= now,
        "the second checkpoint went back to {last} from {now}"
    );
    // A name taken is refused, in the words of the local store, before CRIU runs.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let err = rt
        .block_on(engine.dump(DumpRequest {
            pid: other.id() as i32,
            dir: Some(dir.into()),
            name: Some("ck2".into()),
            compression: Some(Compression::None),
            ..Default::default()
        }))
        .expect_err("taken");
    let _ = other.kill();
    let _ = other.wait();
    assert!(err.to_string().contains("already exists"), "{err}");

    let restored = rt
        .block_on(engine.restore(RestoreRequest {
            path: again.path.clone(),
            ..Default::default()
        }))
        .expect("restore the directory checkpoint");
    let _guard = KillOnDrop(restored.pid);
    assert_eq!(
        next_after(&log, last),
        last + 1,
        "the restored counter restarted"
    );

    // Listed and deleted through the store; nothing ever touched the local disk.
    let at = Location::parse(dir).expect("location");
    let names: Vec<String> = store
        .list(&at)
        .expect("list")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["ck1.tar.zst", "ck2"]);
    store.delete(&at.join("ck1.tar.zst")).expect("delete");
    assert_eq!(store.list(&at).expect("list").len(), 1);
    assert!(
        !env.checkpoints().exists(),
        "{:?}",
        dir_names(&env.checkpoints())
    );
    wait_for("scratch dirs to go", Duration::from_secs(5), || {
        leftovers().is_empty().then_some(())
    });
}
