"""The shared kernel: settings, the ClickHouse connection and its error, Kafka client options,
and the reserved names of the contract. Every context may import it; it imports none of them."""
