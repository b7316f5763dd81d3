// Package deploy gives Go programs GoWatchtower's Helm chart, deploy/helm/otelcol-watchtower,
// exactly as `helm install` reads it. The Watchtower operator renders it: a collector deployment
// is defined once, in the chart, whether a platform team installs it with Helm or with a
// Watchtower resource.
package deploy

import (
	"embed"
	"io/fs"
)

// The "all:" prefix keeps _helpers.tpl and .helmignore, which embed would otherwise skip.
//
//go:embed all:helm/otelcol-watchtower
var chart embed.FS

// ChartDir is the chart's directory in the repository, for messages.
const ChartDir = "deploy/helm/otelcol-watchtower"

// Chart returns the otelcol-watchtower chart's files, rooted at the chart's directory
// (Chart.yaml, values.yaml, templates/, files/ ...).
func Chart() fs.FS {
	sub, err := fs.Sub(chart, "helm/otelcol-watchtower")
	if err != nil {
		panic(err) // the directory is embedded above: unreachable
	}
	return sub
}
