#!/usr/bin/env bash
# The main job, end to end, for a newcomer to watch: start the daemon, run a counting
# process as a job, checkpoint it to a zstd archive (which stops it), restore it, and
# show the counter carrying on from where it stopped. Needs root and `make deps`.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
CEDANA="$BIN/cedana"
WORK=${DEMO_DIR:-/tmp/cedana-demo}
[ -x "$CEDANA" ] || { echo "build first: make build" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "the demo needs root (CRIU)" >&2; exit 1; }

step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }
show() { printf '\033[1;36m$'; printf ' %q' "$@"; printf '\033[0m\n'; "$@"; }

rm -rf "$WORK" && mkdir -p "$WORK"
# A private daemon: its socket, database, checkpoints and logs all live under $WORK.
PRIVATE=(--set "address=$WORK/cedana.sock" --set "db_path=$WORK/cedana.db"
         --set "checkpoint.dir=$WORK/checkpoints" --set "jobs.log_dir=$WORK/jobs")
cedana() { "$CEDANA" "${PRIVATE[@]}" "$@"; }

# Whatever way the demo ends (success, a failed step, Ctrl-C, kill), it leaves nothing
# running: the job, the daemon, and any process still writing into $WORK.
cleanup() {
    set +e
    trap - INT TERM
    cedana job kill demo --timeout 2 >/dev/null 2>&1
    if [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
        # The daemon ends by our SIGTERM (status 143): that is the normal end here.
        wait "$DAEMON_PID" 2>/dev/null
    fi
    # A job the daemon could not stop (it was gone, or the kill failed) still has its
    # output open in $WORK/jobs.
    for fd in /proc/[0-9]*/fd/[12]; do
        case "$(readlink "$fd" 2>/dev/null)" in
            "$WORK"/*) pid=${fd#/proc/}; pid=${pid%%/*}
                       [ "$pid" = "$$" ] || kill -KILL "$pid" 2>/dev/null ;;
        esac
    done
}
trap cleanup EXIT
# Ctrl-C and kill end the script through the EXIT trap (bash alone would not run it).
trap 'exit 130' INT
trap 'exit 143' TERM

step "Start the daemon (log: $WORK/daemon.log)"
# Started directly, not through the cedana function: `func &` forks a subshell, and $!
# would be that subshell's PID, not the daemon's.
"$CEDANA" "${PRIVATE[@]}" daemon start >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do cedana ps >/dev/null 2>&1 && break; sleep 0.1; done
show cedana daemon check || true

step "Run a counting process as a managed job"
show cedana run process --jid demo -- sh -c 'i=0; while :; do echo "$i"; i=$((i+1)); sleep 0.2; done'
sleep 2
show cedana ps
LOG=$(ls "$WORK"/jobs/*.log | head -1)
echo "last lines of its log ($LOG):"; tail -n 3 "$LOG"

step "Checkpoint it to a zstd archive (the process is stopped by the dump)"
show cedana dump job demo --compression zstd --name demo-checkpoint
show ls -l "$WORK/checkpoints"
AT_DUMP=$(tail -n 1 "$LOG")
sleep 1
show cedana ps
[ "$(tail -n 1 "$LOG")" = "$AT_DUMP" ] && echo "the counter is stopped at $AT_DUMP"

step "Restore it"
show cedana restore job demo
sleep 2
show cedana ps
echo "last lines of its log:"; tail -n 3 "$LOG"

step "Check: the counter carried on from $AT_DUMP, not from 0"
NEXT=$(awk -v d="$AT_DUMP" 'f{print; exit} $0==d{f=1}' "$LOG")
NOW=$(tail -n 1 "$LOG")
if [ "$NEXT" = "$((AT_DUMP + 1))" ] && [ "$NOW" -gt "$AT_DUMP" ]; then
    printf '\033[1;32mOK\033[0m: after %s came %s; it is now at %s\n' "$AT_DUMP" "$NEXT" "$NOW"
else
    echo "FAILED: after $AT_DUMP came '$NEXT', now at '$NOW'" >&2
    exit 1
fi
show cedana checkpoints
