//! The one poison-tolerant way to take a mutex in shoal.
//!
//! A panic while a lock is held leaves state that every reader of it still
//! reads consistently (each mutation is complete before anything is
//! published, and a durability failure poisons the store explicitly, see
//! `store::publish`), so a poisoned `Mutex` is taken as it is.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn wait_timeout<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    c.wait_timeout(guard, timeout).unwrap_or_else(|p| p.into_inner()).0
}
