#!/usr/bin/env bash
# Backstop run after the integration suite (and by hack/killtest.sh): kills every process the
# harness started whose test binary is gone — found by the owner marker the harness puts in
# each component's environment (WATCHTOWER_HARNESS_OWNER), not by parent PID, so it works under
# a subreaper too —, tears down orphaned test clusters, reports what the test binaries'
# watchdogs already reaped, and fails if there was anything: the harness should never let a
# component outlive its test. Processes of a living test or `make demo` are left alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../integration"
exec go run ./cmd/reap
