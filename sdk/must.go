package sdk

import (
	"context"
	"fmt"
)

// MustStart is Start for a main function: it panics when the configuration is invalid (the
// message names the variable or option and the bad value). Only configuration errors panic; an
// unreachable collector never does, at start or later.
func MustStart(ctx context.Context, opts ...Option) *Telemetry {
	t, err := Start(ctx, opts...)
	if err != nil {
		panic(fmt.Sprintf("gowatchtower sdk: %v", err))
	}
	return t
}
