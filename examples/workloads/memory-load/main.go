// Command memory-load holds the memory it is given, for GoWatchtower's example operator: a
// Workload of type memory-load runs it with -bytes from spec.load. It allocates that many bytes,
// writes to every page of them so that they are really resident (an untouched allocation only
// reserves address space), then sleeps until SIGTERM or SIGINT and exits 0.
//
// Because every page is touched, a container whose memory limit is below -bytes is killed by the
// kernel's OOM killer while it touches them: the example's memory-over-limit Workload shows an
// OOMKilled container on purpose. The program has no dependency beyond the standard library (it
// parses Kubernetes-style quantities itself) so that its image is one small static binary.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// maxBytes bounds -bytes: a typo such as 64Ei must fail with a message, not with a panic.
const maxBytes = 1 << 40

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "memory-load:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
}

// run parses args, allocates and touches the memory, says how much it holds, and holds it until
// ctx is done.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("memory-load", flag.ContinueOnError)
	fs.SetOutput(out)
	quantity := fs.String("bytes", "32Mi", "memory to hold, as a Kubernetes quantity: 64Mi, 128M, 1Gi, 1048576")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	n, err := parseBytes(*quantity)
	if err != nil {
		return fmt.Errorf("-bytes=%s: %w", *quantity, err)
	}
	fmt.Fprintf(out, "memory-load: allocating %s (%d bytes) and touching every page\n", *quantity, n)
	buf := hold(n)
	rss := "unknown"
	if kib, ok := residentKiB(); ok {
		rss = fmt.Sprintf("%.1f MiB", float64(kib)/1024)
	}
	fmt.Fprintf(out, "memory-load: holding %s (%d bytes, resident set now %s) until SIGTERM\n", *quantity, len(buf), rss)
	<-ctx.Done()
	runtime.KeepAlive(buf) // the memory stays held until the very end
	fmt.Fprintln(out, "memory-load: stopped")
	return nil
}

// hold allocates n bytes and writes to every page of them, so that the kernel has to back each
// page with real memory (and charges it to the container's memory cgroup).
func hold(n int64) []byte {
	buf := make([]byte, n)
	page := os.Getpagesize()
	for i := 0; i < len(buf); i += page {
		buf[i] = 1
	}
	if len(buf) > 0 {
		buf[len(buf)-1] = 1
	}
	return buf
}

// residentKiB reads VmRSS from /proc/self/status (Linux); ok is false elsewhere.
func residentKiB() (kib int64, ok bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, found := strings.CutPrefix(sc.Text(), "VmRSS:"); found {
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib)
			return kib, err == nil
		}
	}
	return 0, false
}

// suffixes are the Kubernetes quantity suffixes that make sense for bytes: binary (Ki..Ei) and
// decimal (k..E). The milli suffix "m" is not accepted: a fraction of a byte is a mistake.
var suffixes = map[string]*big.Rat{
	"":   big.NewRat(1, 1),
	"Ki": new(big.Rat).SetInt64(1 << 10), "Mi": new(big.Rat).SetInt64(1 << 20), "Gi": new(big.Rat).SetInt64(1 << 30),
	"Ti": new(big.Rat).SetInt64(1 << 40), "Pi": new(big.Rat).SetInt64(1 << 50), "Ei": new(big.Rat).SetInt64(1 << 60),
	"k": new(big.Rat).SetInt64(1e3), "M": new(big.Rat).SetInt64(1e6), "G": new(big.Rat).SetInt64(1e9),
	"T": new(big.Rat).SetInt64(1e12), "P": new(big.Rat).SetInt64(1e15), "E": new(big.Rat).SetInt64(1e18),
}

// parseBytes parses a Kubernetes-style quantity of bytes: a decimal number ("1048576", "1.5")
// followed by nothing, a binary or decimal suffix ("64Mi", "128M") or a decimal exponent ("1e6",
// "2E9"), as resource.Quantity writes them. A fractional result is rounded up to a whole byte,
// as resource.Quantity.Value does. It must be more than zero and at most maxBytes.
func parseBytes(s string) (int64, error) {
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end < 0 {
		end = len(s)
	}
	number, suffix := s[:end], s[end:]
	v, ok := new(big.Rat).SetString(number)
	if number == "" || !ok {
		return 0, errors.New("not a quantity of bytes (want e.g. 64Mi, 128M or 1048576)")
	}
	mult, err := multiplier(suffix)
	if err != nil {
		return 0, err
	}
	v.Mul(v, mult)
	bytes, rest := new(big.Int).QuoRem(v.Num(), v.Denom(), new(big.Int))
	if rest.Sign() > 0 {
		bytes.Add(bytes, big.NewInt(1))
	}
	switch {
	case bytes.Sign() <= 0:
		return 0, errors.New("must be more than 0 bytes")
	case bytes.Cmp(big.NewInt(maxBytes)) > 0:
		return 0, fmt.Errorf("more than the %d bytes this program holds at most", int64(maxBytes))
	}
	return bytes.Int64(), nil
}

// multiplier returns the factor of a quantity suffix. "E" alone is exa; "E6" and "e6" are
// decimal exponents, as in Kubernetes' quantity grammar.
func multiplier(suffix string) (*big.Rat, error) {
	if m, ok := suffixes[suffix]; ok {
		return m, nil
	}
	if len(suffix) > 1 && (suffix[0] == 'e' || suffix[0] == 'E') {
		exp := suffix[1:]
		if len(exp) <= 2 && strings.Trim(exp, "0123456789") == "" {
			e, _ := strconv.Atoi(exp)
			return new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(e)), nil)), nil
		}
	}
	return nil, fmt.Errorf("unknown suffix %q (want Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or an exponent such as e6)", suffix)
}
