package harness

import (
	"strings"
	"testing"
)

// A cluster ID the storage tool would read as an option is drawn again.
func TestKafkaClusterIDNeverLooksLikeAnOption(t *testing.T) {
	draws := 0
	read := func(b []byte) (int, error) {
		draws++
		for i := range b {
			b[i] = 0
		}
		if draws == 1 {
			b[0] = 0xF8 // base64url '-' first
		}
		return len(b), nil
	}
	id := kafkaClusterID(read)
	if strings.HasPrefix(id, "-") || draws != 2 {
		t.Fatalf("id %q after %d draws, want a redraw of the leading '-'", id, draws)
	}
	if len(id) != 22 {
		t.Errorf("id %q: %d characters, want 22 (16 bytes base64url)", id, len(id))
	}
}
