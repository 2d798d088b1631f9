//! Integration tests of api-svc through its HTTP API, against real Redis, a fresh Postgres
//! database per test and a temporary storage directory (one binary, modules by topic).

mod bad_input;
mod connections;
mod content;
mod files;
mod lifecycle;
mod memory;
mod metrics;
mod openapi;
mod outages;
mod support;
mod uploads;
