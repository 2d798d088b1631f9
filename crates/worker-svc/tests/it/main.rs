//! worker-svc integration tests.
