//! Integration tests of the SDK core against the local platform, in-process (one test binary, one platform
//! per test): control plane, readiness, data plane, retries and errors, checked through the platform's journal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod control;
mod data;
mod readiness;
mod tls;
