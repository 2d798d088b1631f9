//! Integration tests of worker-svc against real Redis, Postgres and ffmpeg (one binary, modules
//! by topic).

mod callbacks;
mod connections;
mod interruptions;
mod processing;
mod reconciler;
mod shutdown;
mod support;
