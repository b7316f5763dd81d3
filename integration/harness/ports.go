package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FreePort reserves a TCP port on 127.0.0.1 for the rest of the test and returns it. A port is
// handed to a component as a number, so it cannot stay bound; instead it is reserved: it comes
// from outside the kernel's ephemeral range (ip_local_port_range), so no connection or
// listen(":0") anywhere on the machine is given it meanwhile, and it is locked (flock on a file
// per port), so no other test binary or demo of this project picks it until the test ends.
func FreePort(t TB) int {
	t.Helper()
	port, release, err := reservePort()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(release)
	return port
}

// PortLockDir holds one lock file per reserved port.
var PortLockDir = filepath.Join(os.TempDir(), "gowatchtower-ports")

func reservePort() (int, func(), error) {
	lo, hi := reservablePorts()
	if err := os.MkdirAll(PortLockDir, 0o777); err != nil {
		return 0, nil, fmt.Errorf("reserve a port: %w", err)
	}
	start := rand.IntN(hi - lo)
	for i := 0; i < hi-lo; i++ {
		port := lo + (start+i)%(hi-lo)
		if release, ok := tryReserve(port); ok {
			return port, release, nil
		}
	}
	return 0, nil, fmt.Errorf("no free port in %d-%d: all reserved or bound", lo, hi-1)
}

// tryReserve locks port and checks that nothing holds it; the returned func releases the lock.
func tryReserve(port int) (func(), bool) {
	f, err := os.OpenFile(filepath.Join(PortLockDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	l, err := net.Listen("tcp", Loopback(port))
	if err != nil {
		f.Close()
		return nil, false
	}
	l.Close()
	return func() { f.Close() }, true
}

// reservablePorts is [lo, hi): below the ephemeral range when there is room, else above it;
// below 30000 either way, Kubernetes' NodePort range in a test cluster's node.
func reservablePorts() (lo, hi int) {
	elo, ehi := ephemeralPorts()
	switch {
	case min(elo, 30000)-20000 >= 2000:
		return 20000, min(elo, 30000)
	case 65536-(ehi+1) >= 2000:
		return ehi + 1, 65536
	default:
		return 10000, 20000
	}
}

// ephemeralPorts is the kernel's range for connections and listen(":0"), both ends included.
func ephemeralPorts() (lo, hi int) {
	elo, ehi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if a, err := strconv.Atoi(f[0]); err == nil {
				elo = a
			}
			if b, err := strconv.Atoi(f[1]); err == nil {
				ehi = b
			}
		}
	}
	return elo, ehi
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

// getJSON GETs url and decodes its JSON body into into, whatever the status; the response
// (closed) is returned for its status. A body that is not JSON is an error naming the status.
func getJSON(ctx context.Context, url string, into any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return resp, fmt.Errorf("GET %s: %s: decode: %w", url, resp.Status, err)
	}
	return resp, nil
}
