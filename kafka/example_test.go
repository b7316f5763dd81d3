package kafka_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/gowatchtower/watchtower/kafka"
)

// Count the spans of each service the gateway writes, from where this group stopped last time.
func ExampleConsumer() {
	c, err := kafka.NewConsumer([]string{"kafka-0.kafka:9092"}, "span-counter", kafka.WithTopics(kafka.DefaultSpansTopic, ""))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	perService := map[string]int{}
	err = c.Run(ctx, func(_ context.Context, b kafka.Batch) error {
		for _, rs := range b.Traces.ResourceSpans().All() {
			svc, _ := rs.Resource().Attributes().Get("service.name")
			for _, ss := range rs.ScopeSpans().All() {
				perService[svc.Str()] += ss.Spans().Len()
			}
		}
		return nil // handled: the offset may be committed
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(perService)
}
