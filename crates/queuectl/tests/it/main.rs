//! Tests that run the built `queuectl` binary against real Redis (one binary, modules by topic).

mod commands;
mod doctor;
mod support;
