// This file is not generated: it holds the version the distribution reports.

package main

// version is what otelcol-watchtower reports (`--version`, and service.version on its own
// telemetry). The build sets it, `hack/otelcol.sh build` with -ldflags "-X main.version=...";
// builder-config.yaml's dist.version splices this variable into the generated main.go.
var version = "v0.0.0-unversioned"
