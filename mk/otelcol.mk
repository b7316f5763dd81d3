# otelcol-watchtower, the project's collector distribution (docs/collector.md).
# Included by the root Makefile; every step is in hack/otelcol.sh.

OTELCOL_BIN := bin/otelcol-watchtower

.PHONY: otelcol
otelcol: ## regenerate otelcol-watchtower/ if builder-config.yaml changed, build bin/otelcol-watchtower
	@hack/tools.sh builder >/dev/null
	@hack/otelcol.sh build -o $(OTELCOL_BIN)

.PHONY: otelcol-generate
otelcol-generate: ## regenerate otelcol-watchtower/ from builder-config.yaml with the collector builder
	@hack/tools.sh builder >/dev/null
	@hack/otelcol.sh generate

.PHONY: otelcol-check
otelcol-check: ## fail when the committed otelcol-watchtower/ is stale against builder-config.yaml
	@hack/tools.sh builder >/dev/null
	@hack/otelcol.sh check

.PHONY: otelcol-validate
otelcol-validate: otelcol ## validate the pipeline configs in deploy/collector with the built binary
	@for c in deploy/collector/*.yaml; do \
	  echo "otelcol-validate: $$c"; \
	  KUBE_NODE_NAME=$${KUBE_NODE_NAME:-validate} $(OTELCOL_BIN) validate --config $$c; \
	done

.PHONY: otelcol-lint
# With the build's own settings (no cgo, -trimpath, its tags): vet and staticcheck need every
# dependency compiled, and with the same settings that compile is the one `make otelcol`
# reuses, instead of a second compile of the whole collector.
otelcol-lint: ## go vet and staticcheck over otelcol-watchtower/ with its build tags (reuses the build's compile cache)
	@hack/tools.sh staticcheck >/dev/null
	@tags=$$(sed -n 's/^[[:space:]]*build_tags:[[:space:]]*//p' builder-config.yaml | tr -d "\"'"); \
	  echo "otelcol-lint: go vet + staticcheck otelcol-watchtower (tags $$tags)"; \
	  cd otelcol-watchtower && export CGO_ENABLED=0 GOFLAGS=-trimpath && \
	  go vet -tags "$$tags" ./... && $(TOOLS_DIR)/staticcheck-$(STATICCHECK_VERSION)/staticcheck -tags "$$tags" ./...
