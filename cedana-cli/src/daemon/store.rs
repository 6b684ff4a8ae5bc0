//! The daemon's SQLite store: jobs and checkpoints survive a daemon restart. Two
//! connections, one for writes and one for queries (WAL: queries never wait for a
//! commit), each behind a std `Mutex` held only for the length of one statement.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

mod schema;

use schema::{checkpoint_row, job_row, migrate, CK_COLS, JOB_COLS, JOB_COL_COUNT, SCHEMA};

pub use super::job_fields::{JobKind, JobState};

/// A job row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub jid: String,
    pub pid: i32,
    /// How the job came to be.
    pub kind: JobKind,
    /// Whether its process runs.
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub command: String,
    pub log_path: String,
    /// Field 22 of /proc/PID/stat when the job was (re)started, to detect PID reuse.
    pub start_time_ticks: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
    /// runc jobs: the container.
    pub container: Option<ContainerRef>,
    /// uid of the caller that created the job; only it (and root) may act on the job.
    pub owner_uid: u32,
}

/// The runc container behind a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// Container id.
    pub id: String,
    /// Runtime state root (`--root`); `None`: the runtime's default.
    pub root: Option<String>,
    /// Bundle directory (restore reuses it).
    pub bundle: String,
    /// For a containerd container: containerd's socket and the namespace.
    pub containerd: Option<ContainerdAt>,
}

/// Where a containerd container lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdAt {
    /// containerd's socket.
    pub address: String,
    /// The namespace.
    pub namespace: String,
}

/// A checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub id: String,
    pub jid: Option<String>,
    pub name: String,
    pub path: String,
    pub compression: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub metadata_json: String,
    /// uid of the caller that made the checkpoint; only it (and root) may see and use it.
    pub owner_uid: u32,
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// Opens (creating if needed) the database at `path`; a missing parent is created 0700.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| {
                        rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                            Some(format!("cannot create {}: {e}", parent.display())),
                        )
                    })?;
            }
        }
        let conn = Connection::open(path)?;
        // Job command lines and paths are the daemon's business: keep the file private.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        // In WAL mode a reader never waits for a writer: `ps` and lookups do not queue
        // behind a commit's fsync, which takes long while checkpoints are being written.
        let reader = Connection::open(path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
        })
    }

    /// Runs a write on the writing connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        on(&self.conn, f)
    }

    /// Runs a query on the reading connection, on the calling thread even in an async
    /// handler: in WAL mode a query never waits for a write, and the lock is held only
    /// by other queries (well under a millisecond each). block_in_place, as writes use,
    /// would hand this worker's tasks to a blocking-pool thread, which may have to be
    /// started first, and starting threads stalled for up to ~0.5 s while restores moved
    /// tasks between cgroups (`ps` waited on that, not on the query).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// Inserts a job; fails if the jid exists.
    pub fn insert_job(&self, j: &JobRecord) -> rusqlite::Result<()> {
        let containerd = j.container.as_ref().and_then(|c| c.containerd.as_ref());
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (jid, pid, kind, state, exit_code, command, log_path,
                 start_time_ticks, created_at, updated_at, container_id, runc_root, bundle,
                 owner_uid, containerd_address, containerd_namespace)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
                params![
                    j.jid,
                    j.pid,
                    j.kind,
                    j.state,
                    j.exit_code,
                    j.command,
                    j.log_path,
                    j.start_time_ticks.map(|t| t as i64),
                    j.created_at,
                    j.updated_at,
                    j.container.as_ref().map(|c| &c.id),
                    j.container.as_ref().and_then(|c| c.root.as_ref()),
                    j.container.as_ref().map(|c| &c.bundle),
                    j.owner_uid,
                    containerd.map(|c| &c.address),
                    containerd.map(|c| &c.namespace),
                ],
            )
            .map(|_| ())
        })
    }

    /// One job.
    pub fn get_job(&self, jid: &str) -> rusqlite::Result<Option<JobRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE jid = ?1"),
                [jid],
                job_row,
            )
            .optional()
        })
    }

    /// Every job, oldest first.
    pub fn list_jobs(&self) -> rusqlite::Result<Vec<JobRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLS} FROM jobs ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map([], job_row)?;
            rows.collect()
        })
    }

    /// Every job with its number of checkpoints, in one statement: `ps` takes the
    /// store's lock once, not once per job behind every writer.
    pub fn list_jobs_counted(&self) -> rusqlite::Result<Vec<(JobRecord, u32)>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLS}, (SELECT COUNT(*) FROM checkpoints k WHERE k.jid = jobs.jid) \
                 FROM jobs ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map([], |r| Ok((job_row(r)?, r.get(JOB_COL_COUNT)?)))?;
            rows.collect()
        })
    }

    /// Sets a job's state and exit code.
    pub fn set_state(
        &self,
        jid: &str,
        state: JobState,
        exit_code: Option<i32>,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, exit_code = ?3, updated_at = ?4 WHERE jid = ?1",
                params![jid, state, exit_code, now()],
            )
            .map(|_| ())
        })
    }

    /// Points a job at a new incarnation of its process (after restore): running, no exit code.
    pub fn set_process(&self, jid: &str, pid: i32, ticks: Option<u64>) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET pid = ?2, start_time_ticks = ?3, state = ?4, exit_code = NULL,
                 updated_at = ?5 WHERE jid = ?1",
                params![jid, pid, ticks.map(|t| t as i64), JobState::Running, now()],
            )
            .map(|_| ())
        })
    }

    /// Removes a job row (its checkpoints stay).
    pub fn delete_job(&self, jid: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            // Its checkpoints stay (they are the user's data) but no longer name a job
            // that is gone.
            c.execute("UPDATE checkpoints SET jid = NULL WHERE jid = ?1", [jid])?;
            c.execute("DELETE FROM jobs WHERE jid = ?1", [jid])
                .map(|n| n > 0)
        })
    }

    /// Records a checkpoint.
    pub fn insert_checkpoint(&self, k: &CheckpointRecord) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO checkpoints (id, jid, name, path, compression, size_bytes,
                 created_at, metadata_json, owner_uid) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    k.id,
                    k.jid,
                    k.name,
                    k.path,
                    k.compression,
                    k.size_bytes as i64,
                    k.created_at,
                    k.metadata_json,
                    k.owner_uid
                ],
            )
            .map(|_| ())
        })
    }

    /// One checkpoint.
    pub fn get_checkpoint(&self, id: &str) -> rusqlite::Result<Option<CheckpointRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {CK_COLS} FROM checkpoints WHERE id = ?1"),
                [id],
                checkpoint_row,
            )
            .optional()
        })
    }

    /// Checkpoints (of one job if given), oldest first.
    pub fn list_checkpoints(&self, jid: Option<&str>) -> rusqlite::Result<Vec<CheckpointRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {CK_COLS} FROM checkpoints WHERE (?1 IS NULL OR jid = ?1)
                 ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map([jid], checkpoint_row)?;
            rows.collect()
        })
    }

    /// The checkpoint recorded at `path`, if any (newest first).
    pub fn checkpoint_at(&self, path: &str) -> rusqlite::Result<Option<CheckpointRecord>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {CK_COLS} FROM checkpoints WHERE path = ?1
                     ORDER BY created_at DESC, rowid DESC LIMIT 1"
                ),
                [path],
                checkpoint_row,
            )
            .optional()
        })
    }

    /// The newest checkpoint of a job.
    pub fn latest_checkpoint(&self, jid: &str) -> rusqlite::Result<Option<CheckpointRecord>> {
        Ok(self.list_checkpoints(Some(jid))?.pop())
    }

    /// Number of checkpoints of a job.
    pub fn count_checkpoints(&self, jid: &str) -> rusqlite::Result<u32> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM checkpoints WHERE jid = ?1",
                [jid],
                |r| r.get(0),
            )
        })
    }

    /// Removes a checkpoint record.
    pub fn delete_checkpoint(&self, id: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.execute("DELETE FROM checkpoints WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }
}

/// Runs `f` on one of the store's connections. Called from async handlers too: under
/// load the lock can be held by a thread waiting for a CPU or a disk, and an async worker
/// blocked on it would stall every request (`ps` took over half a second with twenty dumps
/// running); block_in_place hands that worker's other tasks to another worker first.
fn on<T>(
    conn: &Mutex<Connection>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let run = || {
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
        _ => run(),
    }
}
