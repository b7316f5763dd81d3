package kafkatopicscheckextension

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
)

// Type is the extension's type name in a collector configuration.
var Type = component.MustNewType("kafka_topics_check")

// NewFactory returns the factory of the kafka_topics_check extension; the collector builder
// registers it from builder-config.yaml.
func NewFactory() extension.Factory {
	return extension.NewFactory(Type, func() component.Config { return createDefaultConfig() }, create, component.StabilityLevelAlpha)
}

func create(_ context.Context, set extension.Settings, cfg component.Config) (extension.Extension, error) {
	return newTopicsCheck(cfg.(*Config), set.Logger), nil
}
