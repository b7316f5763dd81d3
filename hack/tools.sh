#!/usr/bin/env bash
# Builds or fetches the pinned test components into a cache outside the repository.
#
#   hack/tools.sh            every component
#   hack/tools.sh jaeger     just the named ones
#   hack/tools.sh --dir      print the cache directory and exit
#   hack/tools.sh --check    check the prerequisites (Go, host packages, Java, Maven) and exit
#
# The cache lives in $WATCHTOWER_TOOLS_DIR (default: $XDG_CACHE_HOME/gowatchtower/tools,
# i.e. ~/.cache/gowatchtower/tools). Each component is built into <name>-<version>/ and marked
# complete with a .done stamp only after it built, so an interrupted build is redone and a warm
# cache costs one stat per component. Versions come from tools/versions.env, nowhere else.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../tools/versions.env
. "$repo/tools/versions.env"

tools_dir=${WATCHTOWER_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gowatchtower/tools}
if [ "${1:-}" = "--dir" ]; then echo "$tools_dir"; exit 0; fi

all=(kube-apiserver kubernetes etcd coredns envtest jaeger prometheus alertmanager builder telemetrygen kafka staticcheck controller-gen helm python-venv)
want=("$@")
[ ${#want[@]} -eq 0 ] && want=("${all[@]}")

die() { echo "tools: $*" >&2; exit 1; }
log() { echo "tools: $*"; }

mkdir -p "$tools_dir" || die "cannot create the cache directory $tools_dir (set WATCHTOWER_TOOLS_DIR to a writable place)"

# One run at a time: two runs (two terminals, `make -j`) would each delete the other's
# half-built temp directory. The second waits for the first and then finds its work cached.
# `--check` builds nothing and takes no lock.
if [ "${1:-}" != --check ]; then
  command -v flock >/dev/null || die "flock is required (Debian: apt-get install util-linux)"
  exec 9>"$tools_dir/.lock"
  if ! flock -n 9; then
    log "another hack/tools.sh is building into $tools_dir; waiting for it ..."
    flock 9
  fi
fi

# --- prerequisites -----------------------------------------------------------------------------

need_go() {
  command -v go >/dev/null || die "Go is required (1.26 or newer) and 'go' is not on PATH"
  local v
  v=$(go env GOVERSION | sed 's/^go//')
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 26 ]; }; then
    die "Go 1.26 or newer is required, found go$v"
  fi
}

# need_python: Debian's python3 with its venv module (the Python consumer and its tests).
need_python() {
  command -v python3 >/dev/null || die "python3 is required for the Python consumer (Debian: apt-get install python3 python3-venv)"
  python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3's venv module is missing (Debian: apt-get install python3-venv)"
}

need_java() {
  command -v java >/dev/null || die "Java 17 or newer is required to run Apache Kafka and 'java' is not on PATH (Debian: apt-get install openjdk-17-jre-headless)"
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ -n "$v" ] || die "cannot tell the Java version from 'java -XshowSettings:properties'"
  [ "${v%%.*}" -ge 17 ] || die "Java 17 or newer is required to run Apache Kafka, found Java $v"
  command -v mvn >/dev/null || die "Maven is required to fetch Apache Kafka's jars and 'mvn' is not on PATH (Debian: apt-get install maven)"
}

# need_host_packages: what the test cluster (integration/harness StartCluster) and `go test -race`
# need from the machine, each named with the Debian package that provides it. Checked up front
# so a fresh machine fails in seconds with the install line, not 20 minutes into the suite.
need_host_packages() {
  local missing=() p
  for p in "containerd:containerd" "ctr:containerd" "runc:runc" "nsenter:util-linux" "unshare:util-linux" "flock:util-linux" \
           "ip:iproute2" "iptables:iptables" "curl:curl" "gcc:gcc" "apt-get:apt" "make:make" "git:git" \
           "java:openjdk-17-jdk-headless" "mvn:maven" "chromium:chromium"; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
  done
  for p in bridge host-local loopback portmap; do
    [ -x "/usr/lib/cni/$p" ] || missing+=(containernetworking-plugins)
  done
  [ "$(uname -s)" = Linux ] || die "the test harness needs Linux (/proc, namespaces, cgroups); this is $(uname -s)"
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing host packages: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')— install them with:
  apt-get install -y containerd runc containernetworking-plugins iptables iproute2 util-linux curl gcc make git openjdk-17-jdk-headless maven chromium python3-venv"
  fi
}

# `hack/tools.sh --check` (the first step of `make test`): every prerequisite of the suite, in
# seconds, before anything is compiled.
if [ "${1:-}" = --check ]; then
  need_go
  need_host_packages
  need_java
  need_python
  log "prerequisites present: Go $(go env GOVERSION | sed 's/^go//'), Linux, the host packages, Java, Maven and Python"
  exit 0
fi

# Host packages are checked only for a full `make tools`: `hack/tools.sh helm` needs none of them.
if [ ${#want[@]} -eq ${#all[@]} ]; then need_host_packages; fi

# need_disk MiB: refuse to start a build that cannot finish.
need_disk() {
  local want_mib=$1 have_mib
  have_mib=$(df -Pm "$tools_dir" | awk 'NR==2 {print $4}')
  if [ "$have_mib" -lt "$want_mib" ]; then
    die "not enough disk for the next build: $tools_dir has ${have_mib} MiB free, need at least ${want_mib} MiB (free some space or set WATCHTOWER_TOOLS_DIR elsewhere)"
  fi
  # The Go build and module caches grow too; check their file system as well.
  local gocache
  gocache=$(go env GOCACHE)
  mkdir -p "$gocache"
  have_mib=$(df -Pm "$gocache" | awk 'NR==2 {print $4}')
  [ "$have_mib" -ge "$want_mib" ] || die "not enough disk for Go's build cache at $gocache: ${have_mib} MiB free, need ${want_mib} MiB"
}

# --- helpers -----------------------------------------------------------------------------------

go_build_flags=(-trimpath -ldflags=-s\ -w)

# component NAME VERSION MIB BUILD_FN [FILE...]: runs BUILD_FN with $out (a fresh temp dir)
# unless the cache holds NAME-VERSION built by the same recipe. The recipe's key, kept in the
# .done stamp, covers the version, BUILD_FN's own text and the FILEs that define the build
# (e.g. tools/kafka/pom.xml; fn:NAME is the text of a shell function BUILD_FN calls): change
# any of them and the component is rebuilt.
component() {
  local name=$1 version=$2 mib=$3 fn=$4
  shift 4
  local dest="$tools_dir/$name-$version" key
  key=$( { echo "$name $version"; declare -f "$fn"; for f in "$@"; do case $f in fn:*) declare -f "${f#fn:}" ;; *) cat "$repo/$f" ;; esac; done; } | sha256sum | cut -c1-16)
  if [ -f "$dest/.done" ] && [ "$(cat "$dest/.done")" = "$key" ]; then
    log "$name $version: cached in $dest"
    return 0
  fi
  [ -f "$dest/.done" ] && log "$name $version: its recipe changed since it was built; rebuilding"
  need_disk "$mib"
  local start=$SECONDS
  log "$name $version: building into $dest (first run only) ..."
  rm -rf "$dest" "$dest.tmp"
  out="$dest.tmp"
  mkdir -p "$out"
  local logf="$tools_dir/$name-$version.build.log"
  # Not under `if`: bash ignores `set -e` in a tested subshell, and a build step must not fail
  # quietly.
  local rc=0
  set +e
  ( set -e; "$fn" ) >"$logf" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$logf" >&2
    die "$name $version: build failed; full log in $logf"
  fi
  echo "$key" >"$out/.done"
  mv "$out" "$dest"
  log "$name $version: built in $((SECONDS - start))s"
}

# go_module_dir NAME: a scratch module directory for building a program with pinned requirements.
go_module_dir() {
  local d="$tools_dir/src/$1"
  rm -rf "$d"
  mkdir -p "$d"
  echo "$d"
}

# --- components --------------------------------------------------------------------------------

# kubernetes_build DIR-NAME CMD...: builds the named k8s.io/kubernetes commands into $out.
# k8s.io/kubernetes requires its staging modules at v0.0.0 with replace directives pointing
# into its own tree; outside that tree each is replaced by its published release instead.
kubernetes_build() {
  local name=$1 d gomod c
  shift
  d=$(go_module_dir "$name-$KUBERNETES_VERSION")
  cd "$d"
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || { echo "cannot find the go.mod of k8s.io/kubernetes@$KUBERNETES_VERSION"; return 1; }
  {
    echo "module gowatchtower.local/tools/$name"
    echo
    echo "go 1.26"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$KUBERNETES_STAGING_VERSION"'#p' "$gomod"
    echo ")"
  } >go.mod
  grep -q 'k8s.io/api =>' go.mod || { echo "no staging replace directives found in $gomod"; return 1; }
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >tools.go
  go get "k8s.io/kubernetes@$KUBERNETES_VERSION"
  go mod tidy -e
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local v ld=(-s -w) pkgs=()
  # Both version packages: component-base's is what the binaries report, client-go's is what
  # their User-Agent and kubectl's client version say.
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=("-X $v.gitVersion=$KUBERNETES_VERSION" "-X $v.gitMajor=1" "-X $v.gitMinor=$minor" "-X $v.gitTreeState=clean")
  done
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # Static binaries: the node's programs also run inside the test cluster's network namespace
  # and must not depend on the host's C library. One `go build` for all of them shares the
  # compilation of their common packages (and the Go build cache shares it between the two
  # components).
  CGO_ENABLED=0 go build -trimpath -ldflags "${ld[*]}" -o "$out/" "${pkgs[@]}"
  for c in "$@"; do
    if [ "$c" = kubectl ]; then "$out/kubectl" version --client; else "$out/$c" --version; fi
  done
}

# The API server and kubectl: all that envtest and `make demo` need (a cold demo does not wait
# for the node's binaries).
build_kube_apiserver() { kubernetes_build kube-apiserver kube-apiserver kubectl; }

# The rest of a real cluster: the node and the other control-plane programs, next to links to
# the API server and kubectl, so the cluster finds all six in one folder.
build_kubernetes() {
  kubernetes_build kubernetes kube-controller-manager kube-scheduler kubelet kube-proxy
  ln -s "$tools_dir/kube-apiserver-$KUBERNETES_VERSION/kube-apiserver" "$out/kube-apiserver"
  ln -s "$tools_dir/kube-apiserver-$KUBERNETES_VERSION/kubectl" "$out/kubectl"
  "$out/kube-apiserver" --version
}

build_etcd() {
  local d
  d=$(go_module_dir "etcd-$ETCD_VERSION")
  cd "$d"
  cat >go.mod <<'EOF'
module gowatchtower.local/tools/etcd

go 1.26
EOF
  cat >main.go <<'EOF'
// Command etcd is the etcd server, built from its Go module: etcdmain.Main is what the
// upstream etcd binary runs.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  go build "${go_build_flags[@]}" -o "$out/etcd" .
  "$out/etcd" --version
}

build_coredns() {
  # The cluster DNS of the test cluster: CoreDNS with only the plugins a kubeadm Corefile uses
  # (the full plugin set pulls in every cloud SDK and triples the build).
  local d
  d=$(go_module_dir "coredns-$COREDNS_VERSION")
  cd "$d"
  cat >go.mod <<'EOF2'
module gowatchtower.local/tools/coredns

go 1.26
EOF2
  cat >main.go <<'EOF2'
// Command coredns is CoreDNS with the plugins of a kubeadm cluster's Corefile.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The plugins' order in a request, as in CoreDNS' own plugin.cfg.
func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "errors", "log", "cache", "loop", "kubernetes", "forward"}
}

func main() { coremain.Run() }
EOF2
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build "${go_build_flags[@]}" -o "$out/coredns" .
  "$out/coredns" -version
}

build_envtest() {
  # The directory controller-runtime's envtest takes as KUBEBUILDER_ASSETS.
  ln -s "$tools_dir/kube-apiserver-$KUBERNETES_VERSION/kube-apiserver" "$out/kube-apiserver"
  ln -s "$tools_dir/kube-apiserver-$KUBERNETES_VERSION/kubectl" "$out/kubectl"
  ln -s "$tools_dir/etcd-$ETCD_VERSION/etcd" "$out/etcd"
  "$out/kube-apiserver" --version && "$out/etcd" --version
}

go_install() { # go_install PKG@VERSION [go build flags...]
  local pkg=$1; shift
  GOBIN="$out" go install "${go_build_flags[@]}" "$@" "$pkg"
}

# own_module_build MODULE@VERSION: a writable copy of the module's source, built with its own
# go.mod and go.sum, for programs `go install pkg@version` refuses (replace directives).
own_module_source() {
  local dir d
  dir=$(go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || { echo "go mod download $1 gave no source directory"; return 1; }
  d=$(go_module_dir "${1//\//_}")
  cp -r "$dir/." "$d"
  chmod -R u+w "$d"
  echo "$d"
}

build_jaeger() {
  # Jaeger's go.mod has a replace directive, so it is built inside its own module.
  local d
  d=$(own_module_source "github.com/jaegertracing/jaeger@$JAEGER_VERSION")
  cd "$d"
  go build "${go_build_flags[@]}" -o "$out/jaeger" ./cmd/jaeger
  "$out/jaeger" version
}

build_prometheus() {
  # remove_all_sd drops the cloud service-discovery SDKs; static, file and HTTP discovery stay.
  go_install "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" -tags remove_all_sd
  go_install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" -tags remove_all_sd
  "$out/prometheus" --version
}

build_alertmanager() {
  go_install "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION"
  go_install "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION"
  "$out/alertmanager" --version
}

build_builder() { go_install "go.opentelemetry.io/collector/cmd/builder@$COLLECTOR_VERSION"; "$out/builder" version; }

build_telemetrygen() {
  go_install "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$TELEMETRYGEN_VERSION"
  "$out/telemetrygen" --help >/dev/null
}

build_controller_gen() { go_install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"; "$out/controller-gen" --version; }

# build_python_venv: a virtual environment with python/requirements.txt (pinned) from PyPI. The
# tests run its bin/python (-m pytest, -m pip): those work from the folder it is moved to.
build_python_venv() {
  python3 -m venv "$out"
  "$out/bin/python" -m pip install --disable-pip-version-check --no-input -r "$repo/python/requirements.txt"
  "$out/bin/python" -c 'import confluent_kafka, opentelemetry.proto, pytest; print("confluent-kafka", confluent_kafka.version()[0])'
}

build_helm() {
  # The ldflags of helm's own Makefile: reported version, and the Kubernetes version helm
  # template/lint assume without a cluster (1.<minor of its client-go>).
  local pkg=helm.sh/helm/v3 gomod minor
  gomod=$(go mod download -json "$pkg@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
  [ -n "$minor" ] || { echo "no k8s.io/client-go requirement in $gomod"; return 1; }
  GOBIN="$out" go install -trimpath -ldflags "-s -w -X $pkg/internal/version.version=$HELM_VERSION \
    -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$minor \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$pkg/cmd/helm@$HELM_VERSION"
  "$out/helm" version --short
}

build_staticcheck() { go_install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"; "$out/staticcheck" -version; }

build_kafka() {
  # The broker, its tools (console producer/consumer, storage formatter) and a log4j2 backend,
  # resolved from Maven Central with the dependency plugin.
  # --strict-checksums: a jar whose checksum does not match the repository's fails the build
  # (Maven only warns by default); the full output is in the build log.
  mvn -B --strict-checksums -f "$repo/tools/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs"
  cp "$repo/tools/kafka/log4j2.properties" "$out/log4j2.properties"
  ls "$out/libs" | grep -q "^kafka_2.13-$KAFKA_VERSION.jar$"
}

kube_apiserver() { component kube-apiserver "$KUBERNETES_VERSION" 4000 build_kube_apiserver fn:kubernetes_build; }
etcd_component() { component etcd "$ETCD_VERSION" 2000 build_etcd; }

for name in "${want[@]}"; do
  case $name in
    kube-apiserver) need_go; kube_apiserver ;;
    # Both link into the API server's folder (and envtest into etcd's): build those first.
    kubernetes)   need_go; kube_apiserver
                  component kubernetes "$KUBERNETES_VERSION" 4000 build_kubernetes fn:kubernetes_build ;;
    etcd)         need_go; etcd_component ;;
    coredns)      need_go; component coredns "$COREDNS_VERSION" 1000 build_coredns ;;
    envtest)      need_go; kube_apiserver; etcd_component
                  component envtest "$KUBERNETES_VERSION-etcd-$ETCD_VERSION" 10 build_envtest ;;
    jaeger)       need_go; component jaeger "$JAEGER_VERSION" 4000 build_jaeger ;;
    prometheus)   need_go; component prometheus "$PROMETHEUS_VERSION" 4000 build_prometheus ;;
    alertmanager) need_go; component alertmanager "$ALERTMANAGER_VERSION" 2000 build_alertmanager ;;
    builder)      need_go; component builder "$COLLECTOR_VERSION" 1000 build_builder ;;
    telemetrygen) need_go; component telemetrygen "$TELEMETRYGEN_VERSION" 2000 build_telemetrygen ;;
    staticcheck)  need_go; component staticcheck "$STATICCHECK_VERSION" 500 build_staticcheck ;;
    controller-gen) need_go; component controller-gen "$CONTROLLER_TOOLS_VERSION" 1000 build_controller_gen ;;
    helm)         need_go; component helm "$HELM_VERSION" 1500 build_helm ;;
    kafka)        need_java; component kafka "$KAFKA_VERSION" 500 build_kafka tools/kafka/pom.xml tools/kafka/log4j2.properties ;;
    python-venv)  need_python; component python-venv "$PYTHON_VENV_VERSION" 300 build_python_venv python/requirements.txt ;;
    *) die "unknown component '$name'; known: ${all[*]}" ;;
  esac
done
