//! A spinner on stderr for slow operations: only when stderr is a terminal, and only
//! once the operation has taken longer than [`SHOW_AFTER`].

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Operations quicker than this show nothing.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Spinner frame interval.
const TICK: Duration = Duration::from_millis(100);

/// Awaits `fut`, showing `message` with a spinner if it takes longer than a second.
pub async fn with_spinner<F: Future>(message: &str, fut: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return fut.await;
    }
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => return out,
        _ = tokio::time::sleep(SHOW_AFTER) => {}
    }
    // Count the second already waited, so the shown time is the operation's.
    let bar = ProgressBar::new_spinner().with_elapsed(SHOW_AFTER);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(TICK);
    let out = fut.await;
    bar.finish_and_clear();
    out
}
