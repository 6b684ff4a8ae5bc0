//! The little the daemon reads from /proc itself: a process's start time, to tell a job's
//! process from a later one that reuses its PID.

use cedana_runtime::process::inspect;

/// Index of `starttime` (field 22 of /proc/PID/stat) among the fields after the comm.
const STARTTIME_AFTER_COMM: usize = 22 - 3;

/// Start time of a process in clock ticks after boot, if it exists.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Parses `starttime` from the text of /proc/PID/stat (the comm may hold spaces and ')').
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(STARTTIME_AFTER_COMM)?
        .parse()
        .ok()
}

/// `Some(start ticks)` if the process is alive (not a zombie), else `None`.
pub fn probe(pid: i32) -> Option<u64> {
    if inspect::is_alive(pid) {
        start_ticks(pid)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_22_even_with_odd_comm() {
        let stat = "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
    }

    #[test]
    fn own_process_has_a_start_time() {
        assert!(start_ticks(std::process::id() as i32).is_some());
    }
}
