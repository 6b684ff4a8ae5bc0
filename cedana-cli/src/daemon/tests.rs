//! Store CRUD and the restart reconciliation, on a temporary database.

use super::store::*;
use super::watch::{exit_code, reconcile};

const RUNNING: JobState = JobState::Running;
const FROZEN: JobState = JobState::Frozen;
const HALTED: JobState = JobState::Halted;

fn job(jid: &str, pid: i32, state: JobState, ticks: Option<u64>) -> JobRecord {
    JobRecord {
        jid: jid.into(),
        pid,
        kind: JobKind::Process,
        state,
        exit_code: None,
        command: "sleep 1".into(),
        log_path: format!("/tmp/{jid}.log"),
        start_time_ticks: ticks,
        created_at: now(),
        updated_at: now(),
        container: None,
        owner_uid: 0,
    }
}

fn checkpoint(id: &str, jid: Option<&str>) -> CheckpointRecord {
    CheckpointRecord {
        id: id.into(),
        jid: jid.map(Into::into),
        name: format!("ck-{id}"),
        path: format!("/ck/{id}.tar.zst"),
        compression: "zstd".into(),
        size_bytes: 1234,
        created_at: now(),
        metadata_json: "{}".into(),
        owner_uid: 0,
    }
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("sub/cedana.db")).unwrap();
    (dir, store)
}

#[test]
fn jobs_crud() {
    let (_dir, store) = temp_store();
    store.insert_job(&job("a", 10, RUNNING, Some(5))).unwrap();
    store.insert_job(&job("b", 11, RUNNING, None)).unwrap();
    assert!(
        store.insert_job(&job("a", 12, RUNNING, None)).is_err(),
        "duplicate jid"
    );
    assert_eq!(
        store.get_job("a").unwrap().unwrap().start_time_ticks,
        Some(5)
    );
    assert_eq!(store.list_jobs().unwrap().len(), 2);

    store.set_state("a", HALTED, Some(137)).unwrap();
    let a = store.get_job("a").unwrap().unwrap();
    assert_eq!((a.state, a.exit_code), (HALTED, Some(137)));

    store.set_process("a", 99, Some(77)).unwrap();
    let a = store.get_job("a").unwrap().unwrap();
    assert_eq!(
        (a.pid, a.state, a.exit_code, a.start_time_ticks),
        (99, RUNNING, None, Some(77))
    );

    assert!(store.delete_job("b").unwrap());
    assert!(!store.delete_job("b").unwrap());
    assert!(store.get_job("b").unwrap().is_none());
}

#[test]
fn checkpoints_crud_and_latest() {
    let (_dir, store) = temp_store();
    store
        .insert_checkpoint(&checkpoint("c1", Some("a")))
        .unwrap();
    store
        .insert_checkpoint(&checkpoint("c2", Some("a")))
        .unwrap();
    // One record, compared with itself: two made apart could straddle a second.
    let c3 = checkpoint("c3", None);
    store.insert_checkpoint(&c3).unwrap();
    assert_eq!(store.list_checkpoints(None).unwrap().len(), 3);
    assert_eq!(store.list_checkpoints(Some("a")).unwrap().len(), 2);
    assert_eq!(store.count_checkpoints("a").unwrap(), 2);
    assert_eq!(store.latest_checkpoint("a").unwrap().unwrap().id, "c2");
    assert_eq!(store.get_checkpoint("c3").unwrap().unwrap(), c3);
    assert!(store.delete_checkpoint("c2").unwrap());
    assert_eq!(store.latest_checkpoint("a").unwrap().unwrap().id, "c1");
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store.insert_job(&job("a", 10, RUNNING, None)).unwrap();
        store
            .insert_checkpoint(&checkpoint("c1", Some("a")))
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.get_job("a").unwrap().is_some());
    assert!(store.get_checkpoint("c1").unwrap().is_some());
}

#[test]
fn reconcile_halts_gone_and_reused_pids() {
    let (_dir, store) = temp_store();
    store
        .insert_job(&job("gone", 100, RUNNING, Some(1)))
        .unwrap();
    store
        .insert_job(&job("reused", 101, FROZEN, Some(1)))
        .unwrap();
    store
        .insert_job(&job("alive", 102, RUNNING, Some(1)))
        .unwrap();
    store
        .insert_job(&job("unknown-ticks", 103, RUNNING, None))
        .unwrap();
    let mut halted = job("halted", 102, HALTED, Some(1));
    halted.exit_code = Some(3);
    store.insert_job(&halted).unwrap();

    let probe = |pid| match pid {
        101 => Some(2), // a different process now holds the PID
        102 | 103 => Some(1),
        _ => None,
    };
    let alive: Vec<String> = reconcile(&store, probe)
        .unwrap()
        .into_iter()
        .map(|j| j.jid)
        .collect();
    assert_eq!(alive, ["alive", "unknown-ticks"]);
    let state = |jid: &str| store.get_job(jid).unwrap().unwrap();
    assert_eq!(state("gone").state, HALTED);
    assert_eq!(state("reused").state, HALTED);
    assert_eq!(state("alive").state, RUNNING);
    assert_eq!(state("halted").exit_code, Some(3));
}

#[test]
fn exit_codes_like_a_shell() {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;
    let pid = Pid::from_raw(1);
    assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
    assert_eq!(
        exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
        Some(137)
    );
}

#[test]
fn old_database_gains_the_container_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // The schema before runc jobs, with one row in it.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE jobs (jid TEXT PRIMARY KEY, pid INTEGER NOT NULL, kind TEXT NOT NULL,
             state TEXT NOT NULL, exit_code INTEGER NULL, command TEXT NOT NULL,
             log_path TEXT NOT NULL, start_time_ticks INTEGER NULL, created_at TEXT NOT NULL,
             updated_at TEXT NOT NULL);
             INSERT INTO jobs VALUES ('old', 7, 'process', 'halted', 0, 'true', '/l', NULL,
             '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let old = store.get_job("old").unwrap().unwrap();
    assert_eq!(old.container, None);
    let mut j = job("c", 9, RUNNING, None);
    j.kind = JobKind::Runc;
    j.container = Some(ContainerRef {
        id: "ctr".into(),
        root: Some("/run/r".into()),
        bundle: "/b".into(),
        containerd: None,
    });
    store.insert_job(&j).unwrap();
    let mut k = job("k", 10, RUNNING, None);
    k.kind = JobKind::Containerd;
    k.container = Some(ContainerRef {
        id: "c9".into(),
        root: None,
        bundle: String::new(),
        containerd: Some(ContainerdAt {
            address: "/run/c.sock".into(),
            namespace: "k8s.io".into(),
        }),
    });
    store.insert_job(&k).unwrap();
    drop(store);
    // Opening again (columns present) changes nothing.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_job("c").unwrap().unwrap(), j);
    assert_eq!(store.get_job("k").unwrap().unwrap(), k);
}

#[test]
fn old_database_gains_owner_columns_owned_by_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // The schema before owners, with a job and a checkpoint in it.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE jobs (jid TEXT PRIMARY KEY, pid INTEGER NOT NULL, kind TEXT NOT NULL,
             state TEXT NOT NULL, exit_code INTEGER NULL, command TEXT NOT NULL,
             log_path TEXT NOT NULL, start_time_ticks INTEGER NULL, created_at TEXT NOT NULL,
             updated_at TEXT NOT NULL, container_id TEXT NULL, runc_root TEXT NULL,
             bundle TEXT NULL);
             CREATE TABLE checkpoints (id TEXT PRIMARY KEY, jid TEXT NULL, name TEXT NOT NULL,
             path TEXT NOT NULL, compression TEXT NOT NULL, size_bytes INTEGER NOT NULL,
             created_at TEXT NOT NULL, metadata_json TEXT NOT NULL);
             INSERT INTO jobs VALUES ('old', 7, 'process', 'halted', 0, 'true', '/l', NULL,
             '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', NULL, NULL, NULL);
             INSERT INTO checkpoints VALUES ('k', 'old', 'n', '/ck/n', 'none', 1,
             '2024-01-01T00:00:00Z', '{}');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_job("old").unwrap().unwrap().owner_uid, 0);
    assert_eq!(store.get_checkpoint("k").unwrap().unwrap().owner_uid, 0);
    let mut j = job("mine", 9, RUNNING, None);
    j.owner_uid = 1000;
    store.insert_job(&j).unwrap();
    let mut k = checkpoint("k2", Some("mine"));
    k.owner_uid = 1000;
    store.insert_checkpoint(&k).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_job("mine").unwrap().unwrap().owner_uid, 1000);
    assert_eq!(
        store
            .checkpoint_at("/ck/k2.tar.zst")
            .unwrap()
            .unwrap()
            .owner_uid,
        1000
    );
}

#[test]
fn jobs_are_listed_with_their_checkpoint_counts_in_one_go() {
    let (_dir, store) = temp_store();
    store.insert_job(&job("a", 10, RUNNING, None)).unwrap();
    store.insert_job(&job("b", 11, RUNNING, None)).unwrap();
    store
        .insert_checkpoint(&checkpoint("c1", Some("a")))
        .unwrap();
    store
        .insert_checkpoint(&checkpoint("c2", Some("a")))
        .unwrap();
    store.insert_checkpoint(&checkpoint("c3", None)).unwrap();
    let listed: Vec<(String, u32)> = store
        .list_jobs_counted()
        .unwrap()
        .into_iter()
        .map(|(j, n)| (j.jid, n))
        .collect();
    assert_eq!(listed, [("a".to_string(), 2), ("b".to_string(), 0)]);
}
