#!/usr/bin/env bash
# Runs the issue-5 load test on this machine, over loopback only:
# builds casesyncd and casesync-load, and for each scenario starts a fresh
# casesyncd on a temporary data directory and a free 127.0.0.1 port, runs
# the scenario against it, and stops the server. A fresh server per
# scenario keeps one scenario's memory and data from skewing the next.
#
#   cmd/casesync-load/run.sh                      # idle, fanout, push
#   cmd/casesync-load/run.sh push                 # one scenario
#   LOAD_FLAGS='--duration 10s' cmd/casesync-load/run.sh push
#   CASESYNCD=/path/to/casesyncd cmd/casesync-load/run.sh   # another server build
#   QUIET_WAIT=300 cmd/casesync-load/run.sh        # first wait up to 300 s for an idle machine
#
# Results (text, JSON, the load generator's and the server's logs) go to $OUT (default: a new
# /tmp/casesync-load.XXXXXX directory); the data directories are removed.
# Every step is bounded in time; the script stops its server itself, on
# success, failure or Ctrl-C.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/casesync-load.XXXXXX)}
mkdir -p "$out"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(idle fanout push)
read -r -a extra <<<"${LOAD_FLAGS:-}"

# Ten thousand client sockets in one process, and as many in the server:
# raise the open-files limit for this shell and its children. An
# unprivileged shell cannot go past the hard limit; use what it allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n)"

echo "building into $out"
(cd "$repo" && go build -o "$out/casesync-load" ./cmd/casesync-load)
server_bin=${CASESYNCD:-}
if [ -z "$server_bin" ]; then
	(cd "$repo" && go build -o "$out/casesyncd" ./cmd/casesyncd)
	server_bin=$out/casesyncd
fi

pid=
stop_server() {
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 600); do # 60 s for a graceful shutdown
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM # exit runs stop_server

# idle_share prints the percentage of CPU time the machine spent idle over
# two seconds. Other work on the machine skews every figure: the load
# generator reports how much CPU other processes took during each scenario.
idle_share() {
	local a b
	read -r -a a < <(head -n1 /proc/stat)
	sleep 2
	read -r -a b < <(head -n1 /proc/stat)
	local tot=0 i
	for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
	echo $(((b[4] - a[4]) * 100 / (tot > 0 ? tot : 1)))
}

status=0
for s in "${scenarios[@]}"; do
	if [ -n "${QUIET_WAIT:-}" ]; then
		end=$((SECONDS + QUIET_WAIT))
		while [ "$(idle_share)" -lt 90 ] && [ $SECONDS -lt $end ]; do sleep 3; done
	fi
	echo "== $s: machine $(idle_share)% idle, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	data=$out/data-$s
	log=$out/casesyncd-$s.log
	"$server_bin" serve --addr 127.0.0.1:0 --data "$data" >"$log" 2>&1 &
	pid=$!
	url=
	for _ in $(seq 1 300); do # 30 s to start
		url=$(sed -n 's/.*msg="casesyncd listening" url=\(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n1)
		[ -n "$url" ] && break
		kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
		sleep 0.1
	done
	[ -n "$url" ] || { echo "casesyncd did not start"; cat "$log"; exit 1; }
	echo "== $s: casesyncd pid $pid at $url"
	if timeout 30m "$out/casesync-load" --server "$url" --token-file "$data/admin.token" \
		--server-pid "$pid" --scenario "$s" --json-file "$out/$s.json" "${extra[@]}" >"$out/$s.txt" 2>"$out/$s.log"; then
		:
	else
		status=1
		echo "scenario $s failed; see $out/$s.log"
	fi
	cat "$out/$s.txt"
	stop_server
	echo "   server log: $(grep -c 'level=WARN' "$log" || true) warnings, $(grep -c 'level=ERROR' "$log" || true) errors"
	rm -rf "$data"
done
echo "results in $out"
exit $status
