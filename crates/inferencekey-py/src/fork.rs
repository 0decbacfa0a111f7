//! Which process this is, without a system call per check: tokio runtimes, pooled connections and the resolver
//! thread do not survive `fork()`, so each is tagged with the generation that made it, and a forked child (whose
//! generation differs) makes its own. `getpid` is a system call in current C libraries: a check per call cost two
//! of the six system calls of a sync request.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in every child process right after `fork()`, by the handler `register` installs.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The generation of this process: equal in a process and its threads, different in a forked child.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

#[cfg(unix)]
extern "C" fn forked_child() {
    // Runs in the child before `fork()` returns there: only async-signal-safe work, such as this atomic add.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Install the fork handler (once per process, at import; a forked child inherits it).
pub fn register() {
    #[cfg(unix)]
    // SAFETY: `pthread_atfork` only records the handler; `forked_child` is a plain function that lives as long as
    // the process (the extension module is never unloaded) and does one atomic add.
    #[allow(unsafe_code)]
    unsafe {
        libc::pthread_atfork(None, None, Some(forked_child));
    }
}
