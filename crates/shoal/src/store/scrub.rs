//! The scrub: the check of every node the versions found at open reach,
//! run on a background thread after the store has opened, so that opening
//! costs the same whatever the store's size (what recovery needs, the
//! commit records of the chain it starts from and the journal after it, is
//! checked before the open returns).
//!
//! Until the scrub has passed, nothing is served unchecked all the same:
//! every reader, the writer included, checks a node's checksum the first
//! time it parses it (`node::Region`). What the scrub adds is finding
//! damage in what nobody has read yet, and the figures the writer needs
//! for compaction (the bytes the versions at open reach, and whether they
//! hold links), which the open no longer walks for.
//!
//! Damage it finds is logged as an error, shown by `stat`, and refuses
//! every later commit of this writer that writes (`Error::Corrupt`): building new
//! versions over damaged nodes would carry the damage on. Versions already
//! published stay readable wherever they are not damaged. `Store::verify`
//! and `shoal verify` check the same at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::arena::MappedGeneration;
use crate::error::{Error, Result};
use crate::locking::lock;
use crate::node::Commit;
use crate::stat::walk_reachable_until;
use crate::tree::Reach;

use super::WriterState;

/// Where the scrub stands (`Stat::scrub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrubState {
    /// Checking the nodes the versions found at open reach.
    Running,
    /// Every such node's checksum is right.
    Clean {
        /// The bytes those versions reach.
        bytes: u64,
        /// How long the check took.
        millis: u64,
    },
    /// A node is damaged: commits are refused.
    Damaged { file: PathBuf, offset: u64, detail: String },
}

impl std::fmt::Display for ScrubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrubState::Running => write!(f, "running"),
            ScrubState::Clean { bytes, millis } => write!(f, "clean ({bytes} bytes checked in {millis} ms)"),
            ScrubState::Damaged { file, offset, detail } => {
                write!(f, "DAMAGED: {} at offset {offset}: {detail}; commits are refused", file.display())
            }
        }
    }
}

/// What the scrub checks: the versions recovery started from.
pub(super) struct ScrubInput {
    pub mapped: Arc<MappedGeneration>,
    pub end: u64,
    pub chain: Vec<Commit>,
}

/// The scrub's state, its input until it starts, and its figures until
/// the writer takes them. Shared with the scrub's thread, which never
/// holds the store itself: a store dropped meanwhile closes at once.
pub(super) struct Scrub {
    state: Mutex<ScrubState>,
    input: Mutex<Option<ScrubInput>>,
    reach: Mutex<Option<Reach>>,
    /// Set when the store closes: the check gives up.
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scrub {
    pub fn new(input: ScrubInput) -> Arc<Scrub> {
        Arc::new(Scrub {
            state: Mutex::new(ScrubState::Running),
            input: Mutex::new(Some(input)),
            reach: Mutex::new(None),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// A scrub with nothing to check (a new store).
    pub fn clean() -> Arc<Scrub> {
        Arc::new(Scrub {
            state: Mutex::new(ScrubState::Clean { bytes: 0, millis: 0 }),
            input: Mutex::new(None),
            reach: Mutex::new(None),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// Stops the check and waits for its thread: nothing of a closed store
    /// reads its files any more.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }

    /// Takes the scrub's figures into the writer's state, once they are in.
    pub fn update(&self, st: &mut WriterState) {
        let Some(reach) = lock(&self.reach).take() else { return };
        // A compaction since open measured the live bytes itself.
        if !st.live_bytes_known {
            st.live_bytes = reach.bytes;
            st.live_bytes_known = true;
        }
        st.links = reach.links || st.links_added;
    }

    pub fn state(&self) -> ScrubState {
        lock(&self.state).clone()
    }

    /// `Err` if the scrub found damage: what a commit returns then.
    pub fn check(&self) -> Result<()> {
        match &*lock(&self.state) {
            ScrubState::Damaged { file, offset, detail } => Err(Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                detail: format!(
                    "{detail} (found by the scrub after open; this writer refuses commits: \
                     run `shoal verify`, repair or restore the store, and reopen it)"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Starts the check on a thread of its own, run only on CPU time
    /// nothing else wants (`SCHED_IDLE`).
    pub fn start(self: &Arc<Scrub>) {
        let Some(input) = lock(&self.input).take() else { return };
        let scrub = self.clone();
        let started = std::thread::Builder::new().name("shoal-scrub".into()).spawn(move || run(&scrub, input));
        match started {
            Ok(thread) => *lock(&self.thread) = Some(thread),
            Err(e) => {
                // Not checked now: the figures stay the conservative ones, and
                // every node is still checked when first read.
                tracing::warn!(error = %e, "cannot start the scrub thread; the store is checked as it is read");
            }
        }
    }
}

fn run(scrub: &Scrub, input: ScrubInput) {
    crate::sys::mark_this_thread_idle();
    let start = std::time::Instant::now();
    let checked = input
        .mapped
        .region(input.end)
        .and_then(|region| walk_reachable_until(region, &input.mapped.path, &input.chain, true, &scrub.stop));
    let millis = start.elapsed().as_millis() as u64;
    let state = match checked {
        // The store closed.
        Ok(None) => return,
        Ok(Some(reach)) => {
            tracing::debug!(bytes = reach.bytes, millis, "scrub: every node the versions at open reach is intact");
            *lock(&scrub.reach) = Some(reach);
            ScrubState::Clean { bytes: reach.bytes, millis }
        }
        Err(Error::Corrupt { file, offset, detail }) => {
            tracing::error!(file = %file.display(), offset, detail, "scrub: the store is damaged; commits are refused");
            ScrubState::Damaged { file, offset, detail }
        }
        Err(other) => {
            tracing::error!(error = %other, "scrub: the store could not be checked; commits are refused");
            ScrubState::Damaged { file: input.mapped.path.clone(), offset: 0, detail: other.to_string() }
        }
    };
    *lock(&scrub.state) = state;
}
