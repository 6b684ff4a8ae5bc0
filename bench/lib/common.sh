# Shared by the bench/*.sh scripts (sourced; not a benchmark itself): timing, result
# rows, and the memory workload. Callers set WORKLOAD (the cedana-workload binary).

now() { date +%s.%N; }
elapsed() { python3 -c "print(round($(now) - $1, 3))"; }

# Result rows for bench/rows.py: op variant size run seconds extra-json.
rows=()
record() { rows+=("$1 $2 $3 $4 $5 $6"); }

# Starts the memory workload (MIB) in its own session, output to LOG; waits until its
# memory is touched. Its PID is in WPID.
start_workload() { # MIB LOG
    local mib=$1 log=$2
    setsid "$WORKLOAD" memory "$mib" >"$log" 2>&1 </dev/null &
    WPID=$!
    # Still our child (bash reaps it), but out of the job table: no "Killed" notices
    # when CRIU kills it at dump time.
    disown "$WPID" 2>/dev/null || true
    for _ in $(seq 600); do grep -q ready "$log" 2>/dev/null && return 0; sleep 0.1; done
    echo "workload did not become ready" >&2; exit 1
}

# Waits until PID is gone (reaped) so its PID is free for the next restore.
wait_gone() { for _ in $(seq 100); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done; }
