package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gowatchtower/watchtower/examples/workloads/internal/childtest"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20,
		"64Mi":    64 << 20,
		"96Mi":    96 << 20,
		"1536Ki":  1536 << 10,
		"1Gi":     1 << 30,
		"1.5Gi":   3 << 29,
		"128M":    128e6,
		"1k":      1000,
		"1e6":     1e6,
		"2E9":     2e9,
		"0.5":     1, // a fraction of a byte rounds up, as resource.Quantity.Value does
	} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "Mi", "64mi", "64MB", "500m", "0", "0Mi", "-1Mi", "1..2", "1/2", "2E", "1e", "1e999", "64 Mi"} {
		if got, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", bad, got)
		}
	}
}

func TestHoldTouchesEveryPage(t *testing.T) {
	const n = 1<<20 + 123 // not a whole number of pages
	buf := hold(n)
	if len(buf) != n {
		t.Fatalf("hold(%d) returned %d bytes", n, len(buf))
	}
	page := os.Getpagesize()
	for i := 0; i < n; i += page {
		if buf[i] == 0 {
			t.Fatalf("page at offset %d was not touched", i)
		}
	}
	if buf[n-1] == 0 {
		t.Fatal("the last (partial) page was not touched")
	}
}

// TestHoldsUntilSIGTERM runs the real main in a child process (this test binary, re-executed):
// it reports what it holds, its resident set has grown by it, and SIGTERM makes it exit 0.
func TestHoldsUntilSIGTERM(t *testing.T) {
	if os.Getenv("MEMORY_LOAD_MAIN") == "1" {
		os.Args = []string{"memory-load", "-bytes=16Mi"}
		main()
		return
	}
	child := childtest.Start(t, "TestHoldsUntilSIGTERM", "MEMORY_LOAD_MAIN=1")
	line := child.WaitForLine(t, "memory-load: holding 16Mi (16777216 bytes")
	if _, err := os.Stat("/proc/self/status"); err == nil {
		var mib float64
		_, rest, _ := strings.Cut(line, "resident set now ")
		if _, err := fmt.Sscanf(rest, "%f MiB", &mib); err != nil || mib < 16 {
			t.Errorf("the holding line %q does not report a resident set of at least 16 MiB", line)
		}
	}
	child.StopWithSIGTERM(t)
}

func TestRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-bytes=lots"}, {"-bytes=0"}, {"extra"}} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}
