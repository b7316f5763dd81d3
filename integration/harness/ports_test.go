package harness

import (
	"net"
	"testing"
)

// A reserved port is outside the kernel's ephemeral range (so no connection is given it while
// the component starts), distinct from every other reserved one, locked against other test
// binaries until the test ends, and free to bind.
func TestFreePortIsReserved(t *testing.T) {
	lo, hi := reservablePorts()
	elo, ehi := ephemeralPorts()
	if lo < 1024 || (lo <= ehi && hi > elo) {
		t.Fatalf("reservable range %d-%d overlaps the ephemeral range %d-%d or the privileged ports", lo, hi, elo, ehi)
	}
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	port, release, err := reservePort()
	if err != nil {
		t.Fatal(err)
	}
	// Another open of the lock file (what another test binary does) cannot take it ...
	if _, ok := tryReserve(port); ok {
		t.Fatalf("port %d was reserved twice", port)
	}
	l, err := net.Listen("tcp", Loopback(port))
	if err != nil {
		t.Fatalf("a reserved port must be free to bind: %v", err)
	}
	l.Close()
	// ... until it is released.
	release()
	again, ok := tryReserve(port)
	if !ok {
		t.Fatalf("port %d still locked after release", port)
	}
	again()
}
