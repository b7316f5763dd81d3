// Package kafkatopicscheckextension is the kafka_topics_check collector extension: at start it
// asks the Kafka brokers whether the topics the collector writes to exist, so that a missing
// topic stops the collector with a message naming it, instead of showing only in its first
// failed send.
//
// Its connection settings are the Kafka exporter's (brokers, client_id, protocol_version, tls,
// auth with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512); give it the same values and the
// exporter's topics:
//
//	extensions:
//	  kafka_topics_check:
//	    brokers: [kafka-0:9092, kafka-1:9092]
//	    topics: [otlp_spans, otlp_metrics]
//	    on_missing: fail        # or warn: log an error and start anyway
//	    start_timeout: 10s      # how long start waits for a broker to answer
//	    max_retry_interval: 30s # the longest wait between background checks
//	service:
//	  extensions: [kafka_topics_check]
//
// What Start does with the answer:
//
//   - every topic exists: it logs so and is done;
//   - a broker answers that a topic does not exist: with on_missing fail (the default) Start
//     returns an error naming the topics, the brokers and how to create them, and the
//     collector exits; with warn it logs that error and keeps checking;
//   - no broker answers within start_timeout, or TLS or SASL fails: Start succeeds (a Kafka
//     that is down must not make the collector crash-loop while its sending queue can hold the
//     data), logs a warning, and checks again in the background (every second at first, then
//     doubling up to max_retry_interval), logging an error once if a topic turns out missing,
//     until every topic exists or the collector stops.
//
// The metadata request it sends never asks for topic auto-creation, so the check does not
// create a topic even on a broker with auto.create.topics.enable=true.
package kafkatopicscheckextension
