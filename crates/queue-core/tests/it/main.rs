//! Integration tests of queue-core against real Redis servers (one binary, modules by topic).

mod bounded;
mod connections;
mod events;
mod interop;
mod producer;
mod support;
mod tidy;
mod worker;
