//! Locking the mutexes that connections share (store, faults, journal) in a way that survives
//! poisoning; a leaf, so every module that holds shared state can use it.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering from poisoning: a panic caught in one request must not take every
/// later request down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
