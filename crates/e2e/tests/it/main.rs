//! End-to-end tests: the api-svc and worker-svc binaries as processes (see the `e2e` crate).

mod acl;
mod alerts;
mod callbacks;
mod connections;
mod deploy;
mod faults;
mod health;
mod metrics;
mod nothing_lost;
mod ops_page;
mod processing;
mod run_script;
mod s3;
mod schema;
mod secrets;
mod startup;
mod tls;
