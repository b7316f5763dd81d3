#!/usr/bin/env bash
# Backstop run after the integration tests: finds test components (anything executed from the
# tool cache — Kafka's JVM included —, the collector, binaries the tests built) that were orphaned — their parent died, so they were reparented to
# init — kills them, and fails, because the harness should never have let that happen.
# Processes with a living parent (e.g. a `make demo` running beside the tests) are left alone.
set -uo pipefail
tools_dir=$("$(dirname "${BASH_SOURCE[0]}")/tools.sh" --dir)
leaked=()
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  ppid=$(awk '/^PPid:/ {print $2}' "$d/status" 2>/dev/null) || continue
  [ "$ppid" = "1" ] || continue
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
  case "$exe $cmd" in
    *"$tools_dir"*|*/bin/otelcol-watchtower*|*/watchtower-bin-*) leaked+=("$pid") ;;
  esac
done
rc=0
# Test clusters (integration/harness StartCluster) whose test died: their containers run under
# containerd's shims, which are not children of anything the loop above recognises, so the
# harness' own reaper removes them (containers, mounts, cgroups, veth, sysctls) and reports them.
if [ -d /run/gowatchtower/clusters ]; then
  (cd "$(dirname "${BASH_SOURCE[0]}")/../integration" && go run ./cmd/reapclusters) || rc=1
fi
[ ${#leaked[@]} -eq 0 ] && exit $rc
for pid in "${leaked[@]}"; do
  echo "reap: test component outlived its test and was killed: pid $pid: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-200)" >&2
  kill -KILL "$pid" 2>/dev/null
done
exit 1
