# GoWatchtower: every entry point a user or CI calls. `make help` lists them.
#
# The test components (kube-apiserver, etcd, Kafka, Prometheus, Jaeger, Alertmanager, the
# collector builder, telemetrygen, staticcheck) are built once into a cache outside the
# repository by `make tools`; set WATCHTOWER_TOOLS_DIR to move it. Versions: tools/versions.env.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

include tools/versions.env
include mk/otelcol.mk

TOOLS_DIR := $(shell hack/tools.sh --dir)
export WATCHTOWER_TOOLS_DIR := $(TOOLS_DIR)
STATICCHECK := $(TOOLS_DIR)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

# The project's own collector components (builder-config.yaml), each its own module.
COLLECTOR_MODULES := collector/extension/kafkatopicscheckextension
# The Watchtower operator: its own module, so that franz-go and Helm stay out of the library's.
OPERATOR := operator
# Every Go module of the repository.
MODULES := . integration deploy/dashboards/gen hack/images $(OPERATOR) kafka $(COLLECTOR_MODULES)
# otelcol-watchtower is linted by otelcol-lint, with the build tags it is built with (mk/otelcol.mk).

GO_TEST_FLAGS ?=
INTEGRATION_TIMEOUT ?= 40m
# The integration tests marked t.Parallel mostly wait on their components (scrapes, sampling
# decisions, outages, alerts): twelve at a time on two cores. Measured on 2026-12-03 with the 56
# tests of that day: the package in 265–307 s with twelve, 327 s with sixteen (more contention,
# no more overlap), 293 s with four when the suite was half its size. (The live dashboards
# test's failures with eight were its own race, fixed that day.) The cluster tests stay
# sequential.
INTEGRATION_PARALLEL ?= 12
# A failing test keeps its components' logs here (t.ArtifactDir); the test output names the folder.
TEST_OUTPUT := $(CURDIR)/bin/test-output
ARTIFACTS := -artifacts -outputdir $(TEST_OUTPUT)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## build or fetch the pinned test components into the tool cache (idempotent)
	@hack/tools.sh

.PHONY: build
build: ## compile every module
	@for m in $(MODULES); do echo "build: $$m"; (cd $$m && go build ./...); done

.PHONY: lint
lint: otelcol-lint ## go vet and staticcheck over every module; fails on findings
	@hack/tools.sh staticcheck >/dev/null
	@unformatted=$$(gofmt -l $(MODULES) | grep -v '^otelcol-watchtower/' || true); \
	  if [ -n "$$unformatted" ]; then echo "lint: not gofmt-ed (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	@for m in $(MODULES); do \
	  echo "lint: go vet + staticcheck $$m"; \
	  (cd $$m && go vet ./... && $(STATICCHECK) ./...); \
	done

.PHONY: test
test: prereqs lint test-unit test-integration ## the whole suite: lint, unit, integration and end-to-end tests

.PHONY: prereqs
prereqs: ## check what the suite needs from the machine (Go, the host packages, Java, Maven) before building anything
	@hack/tools.sh --check

.PHONY: test-unit
test-unit: ## fast tests: in-memory exporters, fake clients, the harness' own process handling
	go test -race -count=1 $(GO_TEST_FLAGS) ./...
	@mkdir -p $(TEST_OUTPUT)
	cd integration && go test -race -count=1 $(ARTIFACTS) $(GO_TEST_FLAGS) ./harness/... ./cmd/...
	cd hack/images && go test -count=1 $(GO_TEST_FLAGS) ./...
	@hack/tools.sh helm >/dev/null # the operator renders the chart as `helm template` does: its test compares
	cd $(OPERATOR) && go test -race -count=1 $(GO_TEST_FLAGS) ./...
	cd kafka && go test -race -count=1 $(GO_TEST_FLAGS) ./...
	@hack/tools.sh python-venv >/dev/null # the Python consumer's unit tests, in the pinned environment
	cd python && PYTHONDONTWRITEBYTECODE=1 $(TOOLS_DIR)/python-venv-$(PYTHON_VENV_VERSION)/bin/python -m pytest -q -p no:cacheprovider tests
	@for m in $(COLLECTOR_MODULES); do echo "test-unit: $$m"; (cd $$m && go test -race -count=1 $(GO_TEST_FLAGS) ./...); done

.PHONY: test-integration
# The tests run the images on this machine's node only: build them for its architecture (a cold
# run skips cross-compiling the collector); `make images` alone builds every platform, and the
# images' own tests build both platforms of the smallest one.
test-integration: IMAGE_PLATFORMS = linux/$(shell go env GOARCH)
test-integration: tools otelcol images ## tests against the real components started by integration/harness
	@mkdir -p $(TEST_OUTPUT)
	@rc=0; (cd integration && go test -count=1 -v -timeout $(INTEGRATION_TIMEOUT) -parallel $(INTEGRATION_PARALLEL) $(ARTIFACTS) $(GO_TEST_FLAGS) .) || rc=$$?; \
	  hack/reap.sh || rc=1; \
	  exit $$rc

.PHONY: test-kill
KILL_ROUNDS ?= 4
test-kill: ## interrupt test-integration at random points (Ctrl-C or SIGKILL) and check nothing is left behind
	hack/killtest.sh $(KILL_ROUNDS)

.PHONY: images
IMAGE_TAG ?= 0.1.0
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
images: otelcol ## OCI images (collector, example operator, its workloads, pause) into bin/images/, without Docker
	cd hack/images && go run . -repo ../.. -version $(IMAGE_TAG) -platforms $(IMAGE_PLATFORMS)

.PHONY: generate
CONTROLLER_GEN := $(TOOLS_DIR)/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen
EXAMPLE := examples/workload-operator
generate: ## regenerate generated code, manifests, dashboards and docs; tests fail when they are stale
	go run ./semconv/internal/cmd/semconvgen
	cd deploy/dashboards/gen && go run .
	@hack/tools.sh controller-gen helm >/dev/null
	@hack/tools.sh controller-gen >/dev/null
	cd $(EXAMPLE) && $(CONTROLLER_GEN) object paths=./api/... && \
	  $(CONTROLLER_GEN) crd rbac:roleName=workload-operator paths=./... \
	    output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	cd $(OPERATOR) && $(CONTROLLER_GEN) object paths=./api/... && \
	  $(CONTROLLER_GEN) crd rbac:roleName=watchtower-operator paths=./... \
	    output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/chart.sh

.PHONY: bench
BENCH_COUNT ?= 5
bench: otelcol | bin ## benchmarks of the instrumentation against the SDK floor; writes docs/performance.md
	go test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./instrumentation/... | tee bin/bench.txt
	cd integration && go test -run '^$$' -bench BenchmarkCollectorGatewayThroughput -benchtime 1x -count 3 . | tee -a ../bin/bench.txt
	cd integration && go test -run '^$$' -bench BenchmarkOperatorCollectorDown -benchtime 40000x . | tee -a ../bin/bench.txt
	cd integration && go test -run '^$$' -bench BenchmarkConsolePages -benchtime 20x -count 3 . | tee -a ../bin/bench.txt
	cd kafka && go test -run '^$$' -bench BenchmarkTail -benchmem -count 5 ./cmd/watchtower | tee -a ../bin/bench.txt
	go run ./hack/benchreport -command "make bench" -binary bin/otelcol-watchtower -o docs/performance.md < bin/bench.txt
	@echo "bench: wrote docs/performance.md"

bin:
	@mkdir -p bin

.PHONY: demo
DEMO_FLAGS ?=
# Only the components the demo starts (envtest: the API server, kubectl and etcd): a cold
# `make demo` skips the node's Kubernetes binaries, the cluster's, the linters' and the
# chart's tools.
DEMO_TOOLS := envtest jaeger prometheus kafka
demo: otelcol | bin ## the whole local stack with the example operator; prints where to look; Ctrl-C stops it
	@hack/tools.sh $(DEMO_TOOLS)
	cd integration && go build -o ../bin/watchtower-demo ./cmd/demo
	bin/watchtower-demo $(DEMO_FLAGS)

.PHONY: demo-cluster
demo-cluster: tools otelcol images | bin ## the same story in a real single-node Kubernetes cluster (root): chart, operator, pods; Ctrl-C removes it
	cd integration && go build -o ../bin/watchtower-demo ./cmd/demo
	bin/watchtower-demo -cluster -dir bin/demo-cluster $(DEMO_FLAGS)

.PHONY: screenshots
screenshots: otelcol | bin ## retake the console's screenshots in docs/console (the console tests, in headless Chromium, over the demo)
	@hack/tools.sh $(DEMO_TOOLS)
	cd integration && go test -count=1 -timeout 15m -run '^(TestDemo|TestConsoleWithBackendsDown)$$' . -console-screenshots ../docs/console

.PHONY: clean
clean: ## remove build outputs in the repository (the tool cache stays; see clean-tools)
	rm -rf bin/
	go clean -testcache

.PHONY: clean-tools
clean-tools: ## remove the tool cache; the next `make tools` rebuilds everything
	rm -rf "$(TOOLS_DIR)"
