//! The image streamer against real CRIU (`criu dump|restore --stream`): a counting
//! process dumped into 4 compressed shards restores and keeps counting; a damaged
//! shard is refused. Needs root and CRIU; skipped without root.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cedana_runtime::criu::{Criu, CriuOpts};
use cedana_runtime::streamer::{self, Codec, StreamIndex};
use common::{last, root, start_counter, wait_above};

fn wait_session_gone(sid: i32) {
    let start = Instant::now();
    while std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .is_some_and(|st| {
                    st.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<i32>().ok())
                        == Some(sid)
                })
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "session {sid} never went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn streamed_dump_restores_and_keeps_counting() {
    if !root() {
        return;
    }
    let criu = Criu::locate(Path::new("criu")).expect("criu installed (make deps)");
    for codec in [Codec::Zstd, Codec::Lz4] {
        let tmp = tempfile::tempdir().expect("tmp");
        let (images, work) = (tmp.path().join("images"), tmp.path().join("work"));
        std::fs::create_dir_all(&images).expect("mkdir");
        std::fs::create_dir_all(&work).expect("mkdir");
        let log = tmp.path().join("count.log");
        let mut child = start_counter(&log, "0.05");
        wait_above(&log, 3);
        let stats = streamer::dump(
            &criu,
            child.id() as i32,
            &images,
            &work,
            &CriuOpts::default(),
            streamer::ShardPlan::local(4, codec),
        )
        .expect("streamed dump");
        child.wait().expect("reap");
        assert!(stats.raw_bytes > stats.stored_bytes, "{stats:?}");
        let index = StreamIndex::load(&images).expect("index");
        assert_eq!(index.shards.len(), 4);
        assert!(index.file("inventory.img").is_some());
        assert!(
            !std::fs::read_dir(&images)
                .expect("ls")
                .flatten()
                .any(|e| { e.file_name().to_string_lossy().ends_with(".img") }),
            "no uncompressed image file may be written"
        );
        let at_dump = last(&log).expect("count");
        // CRIU restores original PIDs: wait until init has reaped the killed session
        // (the shell's `sleep` children are re-parented to init, which reaps late).
        wait_session_gone(child.id() as i32);
        let restore_work = tmp.path().join("restore-work");
        std::fs::create_dir_all(&restore_work).expect("mkdir");
        let pid = streamer::restore(&criu, &images, &restore_work, &CriuOpts::default(), None)
            .expect("streamed restore");
        assert_eq!(pid, child.id() as i32);
        wait_above(&log, at_dump + 3);
        let text = std::fs::read_to_string(&log).expect("log");
        let nums: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        let i = nums
            .iter()
            .rposition(|n| *n == at_dump)
            .expect("dump value present");
        assert_eq!(nums[i + 1], at_dump + 1, "{codec:?}: carried on");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}
