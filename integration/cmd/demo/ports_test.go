package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// A port in use stops the demo before anything starts, with an error that names the port,
// what needed it and the flag that moves it.
func TestCheckPortsNamesTheBusyPort(t *testing.T) {
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := ports{jaeger: free(), prometheus: free(), kafka: busy.Addr().(*net.TCPAddr).Port, otlpGRPC: free(), otlpHTTP: free(),
		collectorExport: free(), collectorSelf: free(), collectorHealth: free(), operatorMetrics: free(), console: free()}
	err = checkPorts(p)
	if err == nil {
		t.Fatal("checkPorts accepted a port in use")
	}
	for _, want := range []string{fmt.Sprintf("port %d", p.kafka), "(Kafka)", "-kafka-port", "DEMO_FLAGS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	busy.Close()
	if err := checkPorts(p); err != nil {
		t.Errorf("all ports free: %v", err)
	}
}
