package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: no free loopback port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Loopback returns "127.0.0.1:port".
func Loopback(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// Network is where a component listens: the zero value is the test's own network namespace on
// 127.0.0.1; a Cluster's Network() is its node's namespace on the node IP, reachable both from
// the test and from the cluster's pods.
type Network struct {
	// NetNS is the network namespace file; empty means the test's own namespace.
	NetNS string
	// Host is the IP to listen on; empty means 127.0.0.1.
	Host string
}

// Addr returns "host:port" in n.
func (n Network) Addr(port int) string {
	if n.Host == "" {
		return Loopback(port)
	}
	return net.JoinHostPort(n.Host, fmt.Sprint(port))
}

// HTTPStatusOK is a readiness check: GET url answers 200.
func HTTPStatusOK(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
