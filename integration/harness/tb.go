package harness

// TB is the part of testing.TB the harness uses. Tests pass their *testing.T; the demo
// (integration/cmd/demo) passes a runner of its own, so the same code starts the same
// components for `make test` and for `make demo`.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Fatal(args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}
