//! inferencekey-local: a faithful local copy of the InferenceKey platform API (control plane, data
//! plane, admin API) for development, tests and benchmarks. See README.md for the contract.
//!
//! Modules read top-down: clock, error, rng, slug, sync, token, event, readiness, settings,
//! engines, schema, chat, config, reply, auth, host, journal, faults, dialects, sse, state, app, admin, control,
//! data, server, pki, tls, platform.

mod admin;
mod app;
mod auth;
mod chat;
mod clock;
mod config;
mod control;
mod data;
mod dialects;
mod engines;
mod error;
mod event;
mod faults;
mod host;
mod journal;
pub mod pki;
mod platform;
mod readiness;
mod real;
mod reply;
mod rng;
mod schema;
mod server;
mod settings;
mod slug;
mod sse;
mod state;
mod sync;
mod tls;
mod token;

pub use config::{Config, ReadyInfo, Tls};
pub use error::LocalError;
pub use platform::LocalPlatform;
pub use real::{EngineConfig, PACKAGED_SMOLLM2};
