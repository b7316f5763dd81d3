#!/usr/bin/env bash
# Generates and builds otelcol-watchtower, the project's collector distribution, from
# builder-config.yaml with the OpenTelemetry Collector Builder from the tool cache.
#
#   hack/otelcol.sh generate          regenerate otelcol-watchtower/ from builder-config.yaml
#   hack/otelcol.sh check             regenerate into a temporary directory and diff it against
#                                     the committed otelcol-watchtower/; exit 1 when it is stale
#   hack/otelcol.sh build [-o PATH] [--no-generate]
#                                     regenerate when stale (if the builder is in the tool cache;
#                                     with CI=true a stale tree fails instead; --no-generate, which
#                                     tests use, never touches the tree), then build the stripped
#                                     binary with the manifest's build tags and the version
#                                     injected (default output bin/otelcol-watchtower)
#   hack/otelcol.sh version           print the version a build injects
#   hack/otelcol.sh files             list the files the builder generates (what `check` compares)
#
# Why not just `builder --config builder-config.yaml`: the builder runs `go mod tidy`, which also
# resolves the test dependencies of every component, and two of those (contrib's pkg/golden and
# pkg/xk8stest, used only by the tests of transformprocessor and k8sattributesprocessor) are not
# served by the module proxy here, so tidy fails. We run the builder with GOFLAGS=-e, which turns
# that into `go mod tidy -e` (tidy keeps going past modules it cannot fetch), and then fail
# ourselves if any module other than those two could not be fetched. The builder compiles
# nothing (--skip-compilation): `build` compiles, with the project's flags. The project's own
# components (collector/, `path:` in the manifest) get a replace directive that the builder
# writes relative to the scratch directory it generates in; relocate_replaces makes it relative
# to otelcol-watchtower/, as a builder run from the repository root would write it.
#
# Environment: OTELCOL_VERSION overrides the injected version (default: from git, see version);
# OTELCOL_MANIFEST and OTELCOL_DIR replace builder-config.yaml and otelcol-watchtower/ (the
# tests use them to prove that `check` fails on a stale tree); WATCHTOWER_TOOLS_DIR moves the
# tool cache (see hack/tools.sh).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../tools/versions.env
. "$repo/tools/versions.env"
tools_dir=$("$repo/hack/tools.sh" --dir)
builder="$tools_dir/builder-$COLLECTOR_VERSION/builder"
manifest=${OTELCOL_MANIFEST:-$repo/builder-config.yaml}
dist=${OTELCOL_DIR:-$repo/otelcol-watchtower}

# The files the builder writes (main_windows.go is generated and committed too, like upstream).
generated=(components.go main.go main_others.go main_windows.go go.mod go.sum)
# Test-only dependencies of components that the module proxy does not serve; see above.
unserved_ok='github.com/open-telemetry/opentelemetry-collector-contrib/pkg/(golden|xk8stest)'

# One scratch directory per run, removed on exit.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

die() { echo "otelcol: $*" >&2; exit 1; }
log() { echo "otelcol: $*" >&2; }

build_tags() {
  sed -n 's/^[[:space:]]*build_tags:[[:space:]]*\(.*\)$/\1/p' "$manifest" | tr -d "\"'" | head -n1
}

need_builder() {
  [ -x "$builder" ] || die "the collector builder $COLLECTOR_VERSION is not in the tool cache ($builder); run \`hack/tools.sh builder\` (or \`make tools\`)"
}

# generate_into DIR: runs the builder for builder-config.yaml with its output in DIR.
generate_into() {
  local out=$1 tmp cfg logf
  need_builder
  tmp=$(mktemp -d -p "$scratch")
  cfg="$tmp/builder-config.yaml"
  logf="$tmp/builder.log"
  # Same manifest, output elsewhere. The builder resolves output_path from its working directory.
  sed "s#^\([[:space:]]*output_path:\).*#\1 $out#" "$manifest" >"$cfg"
  grep -q "output_path: $out\$" "$cfg" || die "builder-config.yaml has no dist.output_path to rewrite"
  local rc=0
  (cd "$repo" && GOFLAGS="-e ${GOFLAGS:-}" "$builder" --config "$cfg" --skip-compilation --verbose) >"$logf" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "$logf" >&2
    die "the builder failed (exit $rc)"
  fi
  # Every module tidy could not fetch must be one of the known test-only ones.
  local unfetched bad
  unfetched=$(grep -o '[a-zA-Z0-9._/-]*@v[^:]*: reading [^ ]*' "$logf" | sed 's/@.*//' | sort -u || true)
  bad=$(printf '%s\n' "$unfetched" | grep -vE "^($unserved_ok)?\$" || true)
  if [ -n "$bad" ]; then
    sed 's/\\n/\n/g' "$logf" >&2
    die "go mod tidy could not fetch modules other than the known test-only ones: $(echo "$bad" | tr '\n' ' ')"
  fi
  local f
  for f in "${generated[@]}"; do
    [ -f "$out/$f" ] || die "the builder did not write $f"
  done
  relocate_replaces "$out"
}

# relocate_replaces DIR: the builder writes a local module's replace directive (a component with
# `path:` in the manifest, e.g. collector/extension/...) relative to where it generated, DIR, a
# scratch directory; rewrite it relative to otelcol-watchtower/, where go.mod is used. Modules
# and go.sum do not change: the directory is the same one.
relocate_replaces() {
  local out=$1 line abs rel
  local re='^(replace[[:space:]].*=>[[:space:]]*)(\.\.?/[^[:space:]]*)[[:space:]]*$'
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ $re ]]; then
      abs=$(realpath -m "$out/${BASH_REMATCH[2]}")
      rel=$(realpath -m --relative-to="$dist" "$abs")
      case $rel in ../* | ./*) ;; *) rel="./$rel" ;; esac
      line="${BASH_REMATCH[1]}$rel"
    fi
    printf '%s\n' "$line"
  done <"$out/go.mod" >"$out/go.mod.relocated"
  mv "$out/go.mod.relocated" "$out/go.mod"
}

cmd_generate() {
  local tmp
  tmp=$(mktemp -d -p "$scratch")
  generate_into "$tmp/out"
  mkdir -p "$dist"
  local f
  for f in "${generated[@]}"; do
    cp "$tmp/out/$f" "$dist/$f"
  done
  log "generated ${generated[*]} in otelcol-watchtower/"
}

# cmd_check: 0 when otelcol-watchtower/ holds exactly what the builder generates now.
cmd_check() {
  local tmp rc=0 f
  tmp=$(mktemp -d -p "$scratch")
  generate_into "$tmp/out"
  for f in "${generated[@]}"; do
    if [ ! -f "$dist/$f" ]; then
      echo "otelcol: otelcol-watchtower/$f is missing" >&2
      rc=1
    elif ! diff -u --label "committed otelcol-watchtower/$f" --label "generated from builder-config.yaml" "$dist/$f" "$tmp/out/$f" >&2; then
      rc=1
    fi
  done
  if [ "$rc" -ne 0 ]; then
    echo "otelcol: otelcol-watchtower/ is stale against builder-config.yaml; run \`make otelcol-generate\` and commit the result" >&2
    return 1
  fi
  log "otelcol-watchtower/ is up to date with builder-config.yaml"
}

cmd_version() {
  if [ -n "${OTELCOL_VERSION:-}" ]; then
    echo "$OTELCOL_VERSION"
    return
  fi
  local v
  if v=$(git -C "$repo" describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
    echo "$v"
  elif v=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null); then
    if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
      v="$v.dirty"
    fi
    echo "v0.0.0-dev+$v"
  else
    echo "v0.0.0-dev"
  fi
}

cmd_build() {
  local out="$repo/bin/otelcol-watchtower" regenerate=1
  while [ $# -gt 0 ]; do
    case $1 in
      -o) [ $# -ge 2 ] || die "build: -o needs a path"; out=$2; shift 2 ;;
      --no-generate) regenerate=0; shift ;;
      *) die "build: unknown argument $1" ;;
    esac
  done
  case $out in /*) ;; *) out="$PWD/$out" ;; esac
  if [ "$regenerate" -eq 0 ]; then
    :
  elif [ -x "$builder" ]; then
    if ! cmd_check >/dev/null 2>&1; then
      # In CI a stale tree is an error, never silently fixed: the committed code is what users
      # build, and TestCollectorGeneratedCodeIsCurrent must see it as it was committed.
      [ "${CI:-}" != true ] || { cmd_check || true; die "otelcol-watchtower/ is stale against builder-config.yaml (CI does not regenerate it): run \`make otelcol-generate\` and commit the result"; }
      log "otelcol-watchtower/ is stale against builder-config.yaml; regenerating"
      cmd_generate
    fi
  else
    log "the builder is not in the tool cache; building the committed otelcol-watchtower/ as it is"
  fi
  local version tags
  version=$(cmd_version)
  tags=$(build_tags)
  mkdir -p "$(dirname "$out")"
  # -trimpath and -s -w: what the builder itself would do; CGO off like the builder's default.
  (cd "$dist" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w -X main.version=$version" -o "$out" .)
  log "built $out (version $version, tags $tags, $(stat -c %s "$out" | awk '{printf "%.1f MB", $1/1e6}'))"
}

case ${1:-} in
  generate) cmd_generate ;;
  check) cmd_check ;;
  build) shift; cmd_build "$@" ;;
  version) cmd_version ;;
  files) printf '%s\n' "${generated[@]}" ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
