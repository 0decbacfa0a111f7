//! Errors of starting the local platform (`LocalError`); request-level errors are HTTP replies
//! (see `reply`), never Rust errors.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Why the local platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A non-loopback host without `allow_remote`.
    #[error(
        "refusing to listen on {0}: only loopback addresses are allowed without --allow-remote"
    )]
    RemoteNotAllowed(IpAddr),
    /// The project name has no letter or digit.
    #[error("invalid project name {0:?}: it must contain a letter or a digit")]
    InvalidProject(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not start.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
    /// The state directory could not be used.
    #[error("state directory {path}: {message}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another platform (in this process or another) holds the state directory's lock.
    #[error(
        "state directory {} is in use by another running local platform{}; stop it or use another state directory",
        dir.display(),
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    StateDirInUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder's process id, when it could be read from the lock file.
        pid: Option<u32>,
    },
    /// The operating system's random generator could not be read (for the tokens).
    #[error("cannot read random bytes from the operating system: {0}")]
    Randomness(String),
    /// HTTPS could not be set up (unreadable or bad certificate, key or client CA file, a
    /// client CA without TLS, the generated CA not writable).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server thread stopped before it was listening.
    #[error("the local platform stopped during start-up")]
    Startup,
    /// Invalid real-engine settings (`Config::engines`).
    #[error("invalid engine settings: {0}")]
    Engines(String),
}

impl LocalError {
    /// A state-directory error about `path`.
    pub fn state(path: &Path, cause: impl Display) -> Self {
        LocalError::State {
            path: path.to_path_buf(),
            message: cause.to_string(),
        }
    }

    /// A failure of the operating system's random generator.
    pub fn randomness(cause: impl Display) -> Self {
        LocalError::Randomness(cause.to_string())
    }
}
