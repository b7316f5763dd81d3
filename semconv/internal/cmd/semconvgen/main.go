// Command semconvgen generates semconv/semconv.gen.go, docs/semconv.md and the Python module
// python/gowatchtower_kafka/semconv.py from
// semconv/registry.yaml. Run it through `make generate` from the repository root.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gowatchtower/watchtower/semconv/internal/generator"
)

func main() {
	registry := flag.String("registry", "semconv/registry.yaml", "registry file")
	goOut := flag.String("go", "semconv/semconv.gen.go", "generated Go file")
	mdOut := flag.String("doc", "docs/semconv.md", "generated reference page")
	pyOut := flag.String("python", "python/gowatchtower_kafka/semconv.py", "generated Python module")
	flag.Parse()
	if err := run(*registry, *goOut, *mdOut, *pyOut); err != nil {
		fmt.Fprintln(os.Stderr, "semconvgen:", err)
		os.Exit(1)
	}
}

func run(registry, goOut, mdOut, pyOut string) error {
	data, err := os.ReadFile(registry)
	if err != nil {
		return err
	}
	reg, err := generator.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", registry, err)
	}
	src, err := reg.GenerateGo()
	if err != nil {
		return err
	}
	if err := os.WriteFile(goOut, src, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(pyOut, reg.GeneratePython(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(mdOut, reg.GenerateMarkdown(), 0o644)
}
