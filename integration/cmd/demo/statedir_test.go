package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The demo empties its own state directory from the last run, and refuses any other that is
// not empty: -dir=. must not delete a checkout.
func TestPrepareStateDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "demo")
	if _, err := prepareStateDir(dir); err != nil {
		t.Fatalf("a new directory: %v", err)
	}
	leftover := filepath.Join(dir, "kafka.log")
	if err := os.WriteFile(leftover, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareStateDir(dir); err != nil {
		t.Fatalf("the demo's own directory: %v", err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the previous run's %s is still there (%v)", leftover, err)
	}

	precious := filepath.Join(root, "checkout")
	if err := os.MkdirAll(precious, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(precious, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := prepareStateDir(precious)
	if err == nil || !strings.Contains(err.Error(), precious) {
		t.Fatalf("a directory the demo did not create: got %v, want a refusal naming it", err)
	}
	if _, err := os.Stat(filepath.Join(precious, "go.mod")); err != nil {
		t.Errorf("the refused directory lost its files: %v", err)
	}
}
