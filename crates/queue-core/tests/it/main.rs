//! Integration tests of queue-core against real Redis.
