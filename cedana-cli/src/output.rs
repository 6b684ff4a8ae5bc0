//! Output: aligned text tables for people, JSON for machines (`--json`), and the one
//! way the CLI writes to stdout.

use std::fmt::Write as _;
use std::io::Write as _;

/// Exit status of a command whose reader went away, as the shell shows a SIGPIPE death.
const EXIT_BROKEN_PIPE: i32 = 128 + libc::SIGPIPE;

/// Writes `bytes` to stdout and flushes. When the reader went away (`cedana ps | head`)
/// the process ends quietly with status 141, as Unix tools do on SIGPIPE; SIGPIPE itself
/// stays ignored, because a vectored write to the daemon's socket after the daemon
/// closed it would otherwise kill the client without a word.
pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        eprintln!("Error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!($($arg)*).as_bytes())
    };
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// A text table with a header row.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders columns separated by three spaces, the last one unpadded.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let empty = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).unwrap_or(&empty);
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        crate::out!("{}", self.render());
    }
}

/// `--profile`: each step of the chain, in order, with its total and own time.
pub fn print_profile(steps: &[crate::proto::StepTiming]) {
    let mut t = Table::new(&["STEP", "TOTAL MS", "OWN MS"]);
    for s in steps {
        t.row(vec![
            s.name.clone(),
            s.total_ms.to_string(),
            s.own_ms.to_string(),
        ]);
    }
    t.print();
}

/// `--profile` as JSON: `[{"name", "total_ms", "own_ms"}]`.
pub fn profile_json(steps: &[crate::proto::StepTiming]) -> serde_json::Value {
    steps
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "total_ms": s.total_ms, "own_ms": s.own_ms}))
        .collect()
}

/// Prints a JSON value, pretty, to stdout.
pub fn print_json(value: &serde_json::Value) {
    crate::outln!("{value:#}");
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `-` for a missing value.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// CRIU's statistics as `--print-stats` shows them: times in ms, sizes in bytes too.
pub fn criu_stats_text(stats: &cedana_runtime::image::metadata::CriuStats) -> String {
    // CRIU counts pages of the host's page size.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let ms = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
    let pages = |n: u64| format!("{n} ({})", human_bytes(n.saturating_mul(page)));
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<22} {v}\n"));
    if let Some(d) = &stats.dump {
        line("frozen time", ms(d.frozen_time_us));
        line("freezing time", ms(d.freezing_time_us));
        line("memory dump time", ms(d.memdump_time_us));
        line("memory write time", ms(d.memwrite_time_us));
        line("pages scanned", pages(d.pages_scanned));
        line("pages skipped (parent)", pages(d.pages_skipped_parent));
        line("pages written", pages(d.pages_written));
    }
    if let Some(r) = &stats.restore {
        line("restore time", ms(r.restore_time_us));
        line("forking time", ms(r.forking_time_us));
        line("pages restored", pages(r.pages_restored));
        line("pages compared", pages(r.pages_compared));
        line("pages skipped (COW)", pages(r.pages_skipped_cow));
    }
    format!("CRIU statistics:\n{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["JID", "PID", "COMMAND"]);
        t.row(vec!["a1".into(), "12345".into(), "sh -c 'x'".into()]);
        t.row(vec!["longer-id".into(), "7".into(), "".into()]);
        assert_eq!(
            t.render(),
            "JID         PID     COMMAND\n\
             a1          12345   sh -c 'x'\n\
             longer-id   7\n"
        );
    }

    #[test]
    fn empty_table_prints_header() {
        assert_eq!(Table::new(&["ID", "PATH"]).render(), "ID   PATH\n");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(or_dash(None::<i32>), "-");
    }
}
