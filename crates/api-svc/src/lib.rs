//! api-svc: the HTTP API of the product. Other services upload files (streamed into storage,
//! recorded in Postgres, enqueued on the `files` queue), follow their processing, download
//! the content and what processing made, and may get the result on a signed callback.
//!
//! `main.rs` is thin: telemetry, [`Config::from_env`], [`Application::build`],
//! [`Application::run_until`] the shutdown signal. The tests build the same application on
//! port 0.
//!
//! - `config`: the variables and their defaults;
//! - `app`: the wiring;
//! - `metrics`: the Prometheus series and the middleware that counts requests;
//! - `routes/`: one file per resource (`files`, `content`, `health`), on top of
//! - `upload` (receiving a body into the store), `idempotency`, `range`, `cursor`, `filename`,
//!   `views` (the answer types), `auth` (bearer tokens), `request_id` (the middleware),
//!   `error` (the one `ResponseError`) and `state` (what handlers share);
//! - `openapi`: the document at `/openapi.json`.
#![warn(missing_docs)]

mod app;
mod auth;
mod config;
mod cursor;
mod error;
mod filename;
mod idempotency;
mod metrics;
mod openapi;
mod range;
mod request_id;
mod routes;
mod state;
mod upload;
mod views;

pub use app::{Application, SERVICE, SHUTDOWN_TIMEOUT};
pub use config::{Config, DEFAULT_DATABASE_TIMEOUT, DEFAULT_MAX_UPLOAD_BYTES, KNOWN_VARS};
pub use openapi::ApiDoc;
