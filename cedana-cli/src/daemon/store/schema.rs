//! The store's SQL: the schema, the columns added since (migrations), and rows to
//! records.

use rusqlite::{Connection, Row};

use super::{CheckpointRecord, ContainerRef, ContainerdAt, JobRecord};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    jid TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER NULL,
    command TEXT NOT NULL,
    log_path TEXT NOT NULL,
    start_time_ticks INTEGER NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    jid TEXT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    compression TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    metadata_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_jid ON checkpoints(jid);
";

/// Columns added after the first schema: (name, SQL type). A database created before
/// them gets them with ALTER TABLE on open (nullable, so old rows stay valid).
const JOB_MIGRATIONS: &[(&str, &str)] = &[
    ("container_id", "TEXT NULL"),
    ("runc_root", "TEXT NULL"),
    ("bundle", "TEXT NULL"),
    // Who the job belongs to (its caller's uid); jobs from before owners were kept
    // were all root's, since only root could reach the daemon with any power.
    ("owner_uid", "INTEGER NOT NULL DEFAULT 0"),
    // Where a containerd job's container lives.
    ("containerd_address", "TEXT NULL"),
    ("containerd_namespace", "TEXT NULL"),
];

/// Columns added to `checkpoints` after the first schema, as [`JOB_MIGRATIONS`].
const CHECKPOINT_MIGRATIONS: &[(&str, &str)] = &[("owner_uid", "INTEGER NOT NULL DEFAULT 0")];

pub(super) const JOB_COLS: &str =
    "jid, pid, kind, state, exit_code, command, log_path, start_time_ticks, \
                        created_at, updated_at, container_id, runc_root, bundle, owner_uid, \
                        containerd_address, containerd_namespace";
/// How many columns [`JOB_COLS`] names.
pub(super) const JOB_COL_COUNT: usize = 16;

/// Adds the columns of [`JOB_MIGRATIONS`] and [`CHECKPOINT_MIGRATIONS`] a database lacks.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, columns) in [
        ("jobs", JOB_MIGRATIONS),
        ("checkpoints", CHECKPOINT_MIGRATIONS),
    ] {
        let have: Vec<String> = {
            let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
            let names = st.query_map([], |r| r.get::<_, String>(1))?;
            names.collect::<rusqlite::Result<_>>()?
        };
        for (name, ty) in columns {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty}"))?;
            }
        }
    }
    Ok(())
}
pub(super) const CK_COLS: &str =
    "id, jid, name, path, compression, size_bytes, created_at, metadata_json, owner_uid";

pub(super) fn job_row(r: &Row) -> rusqlite::Result<JobRecord> {
    let containerd = match (
        r.get::<_, Option<String>>(14)?,
        r.get::<_, Option<String>>(15)?,
    ) {
        (Some(address), Some(namespace)) => Some(ContainerdAt { address, namespace }),
        _ => None,
    };
    Ok(JobRecord {
        jid: r.get(0)?,
        pid: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        exit_code: r.get(4)?,
        command: r.get(5)?,
        log_path: r.get(6)?,
        start_time_ticks: r.get::<_, Option<i64>>(7)?.map(|t| t as u64),
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        container: r.get::<_, Option<String>>(10)?.map(|id| ContainerRef {
            id,
            root: r.get(11).ok().flatten(),
            bundle: r
                .get::<_, Option<String>>(12)
                .ok()
                .flatten()
                .unwrap_or_default(),
            containerd,
        }),
        owner_uid: r.get(13)?,
    })
}

pub(super) fn checkpoint_row(r: &Row) -> rusqlite::Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        id: r.get(0)?,
        jid: r.get(1)?,
        name: r.get(2)?,
        path: r.get(3)?,
        compression: r.get(4)?,
        size_bytes: r.get::<_, i64>(5)? as u64,
        created_at: r.get(6)?,
        metadata_json: r.get(7)?,
        owner_uid: r.get(8)?,
    })
}
