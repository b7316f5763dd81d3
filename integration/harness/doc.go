// Package harness starts the real systems GoWatchtower is tested against — kube-apiserver and
// etcd (through controller-runtime's envtest), Apache Kafka, Prometheus, Jaeger, Alertmanager
// and the built collector — as subprocesses on free loopback ports, and gives tests small
// clients to ask them what they received.
//
// Every Start function takes a testing.TB and registers its own cleanup: the process is sent
// SIGTERM and, if it has not exited after a timeout, SIGKILL (Jaeger, for one, does not always
// exit on SIGTERM while it is exporting). Each process's output goes to a log file that is
// printed when the test fails. Children are started in their own process group with a
// parent-death signal, so a test binary that dies abruptly does not leave them running.
//
// Start functions take a TB: a *testing.T in tests, the demo runner in `make demo`.
//
// The binaries come from the tool cache that `make tools` fills (see Tools). A missing binary
// fails the test with the command that builds it; nothing is skipped.
package harness
