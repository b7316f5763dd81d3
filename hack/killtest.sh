#!/usr/bin/env bash
# `make test-kill`: interrupts the integration suite at random points, as a user's Ctrl-C or
# CI's kill would, and checks that nothing it started survives — with no reaper run by hand:
# the harness' own mechanisms (death signals, each test binary's watchdog) must clean up.
#
#   hack/killtest.sh [ROUNDS]     default 4; KILLTEST_MAX_DELAY (s, default 240) bounds the
#                                 random point; KILLTEST_SEED makes the points repeatable;
#                                 KILLTEST_TARGET is the make target interrupted (default
#                                 test-integration; `test` includes lint and the unit tests)
#
# Each round starts `make $KILLTEST_TARGET` in its own process group, waits a random time,
# then sends either SIGINT to the whole group (a terminal's Ctrl-C) or SIGKILL to the whole
# group (kill -9 of everything, the watchdogs excepted: they run in their own sessions), and
# then gives the machine 60 s to be clean: no test binary, component, demo or cluster left.
# Needs a machine where nothing else of the project runs (it counts every such process).
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rounds=${1:-4}
max_delay=${KILLTEST_MAX_DELAY:-240}
target=${KILLTEST_TARGET:-test-integration}
RANDOM=${KILLTEST_SEED:-$$}
tools_dir=$(hack/tools.sh --dir)
cluster_root=/run/gowatchtower/clusters

# leftovers prints every live process of the project: anything run from the tool cache, the
# collector, the demo, a test binary, or anything carrying the harness' owner marker.
leftovers() {
  local d pid exe cmd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    grep -q '^State:[[:space:]]*Z' "$d/status" 2>/dev/null && continue
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    case "$exe $cmd" in
      *"$tools_dir"*|*/otelcol-watchtower*|*watchtower-demo*|*/integration.test*|*/harness.test*|*containerd-shim*)
        echo "  pid $pid: ${cmd:0:160}"; continue ;;
    esac
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -q '^WATCHTOWER_HARNESS_OWNER='; then
      echo "  pid $pid (owner marker): ${cmd:0:160}"
    fi
  done
  if [ -d "$cluster_root" ] && [ -n "$(ls -A "$cluster_root" 2>/dev/null)" ]; then
    echo "  test clusters: $(ls "$cluster_root" | tr '\n' ' ')"
  fi
}

before=$(leftovers)
if [ -n "$before" ]; then
  echo "killtest: the machine is not clean before the first round:"; echo "$before"; exit 2
fi
# Warm up once, as test-integration builds (images for this machine only), so that the rounds
# spend their time in the tests, not in building.
make -s tools otelcol >/dev/null && make -s images IMAGE_PLATFORMS="linux/$(go env GOARCH)" >/dev/null || exit 2

failed=0
for round in $(seq 1 "$rounds"); do
  delay=$((20 + RANDOM % (max_delay - 20)))
  sig=$([ $((round % 2)) -eq 1 ] && echo KILL || echo INT) # both kinds, whatever the seed
  log=$(mktemp /tmp/killtest-round-XXXX.log)
  setsid make "$target" >"$log" 2>&1 &
  pgid=$!
  sleep "$delay"
  running=$(grep -o '^=== RUN   [A-Za-z0-9_/]*' "$log" | tail -n 1 | cut -c11-)
  echo "killtest: round $round: SIG$sig to the process group of make $target after ${delay}s (test running: ${running:-none yet})"
  kill -"$sig" -- -"$pgid" 2>/dev/null
  t0=$SECONDS
  wait "$pgid" 2>/dev/null
  clean=""
  for _ in $(seq 1 120); do
    left=$(leftovers)
    [ -z "$left" ] && { clean=yes; break; }
    sleep 0.5
  done
  if [ -z "$clean" ]; then
    echo "killtest: round $round: left behind 60s after SIG$sig:"; echo "$left"
    failed=1
    "$repo/hack/reap.sh" >/dev/null 2>&1 # so that the next round starts clean
  else
    echo "killtest: round $round: clean within $((${SECONDS} - t0))s; what the killed test binaries' watchdogs reaped:"
    cat /tmp/gowatchtower-reaped/*.log 2>/dev/null | grep '^  ' | cut -c1-150 || true
  fi
  rm -f /tmp/gowatchtower-reaped/*.log "$log"
done
exit $failed
