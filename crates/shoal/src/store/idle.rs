//! Tidying an idle store. A burst of commits leaves the arena up to
//! `compact_factor` times the threshold, and the compaction that follows
//! keeps the file it left as the spare for the next one: right for a store
//! under load, wasteful for one at rest. Once no commit has come for
//! [`Options::tidy_when_idle`](crate::Options::tidy_when_idle), a thread
//! measures what the retained versions reach (on a thread that takes only
//! CPU time nothing else wants), compacts if more than half of the arena
//! is garbage (and at least 1 MiB),
//! punches out the blocks the arena's file holds above its prefill window
//! (a recycled file keeps its last generation's size), and deletes the
//! spare and every old generation nothing pins. An idle
//! store's files then hold about twice its live data. Nothing a reader maps
//! shrinks: a compaction writes a new file, and only unpinned files are
//! deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{generations, Shared};
use crate::error::Result;
use crate::locking::{lock, wait_timeout};
use crate::retained;
use crate::stat::walk_reachable_until;

/// Less garbage than this is left alone, however small the live data.
const MIN_GARBAGE: u64 = 1 << 20;

/// How often the thread looks at the head while the store is busy.
const TICK: Duration = Duration::from_millis(250);
/// The shortest wait between looks, whatever `tidy_when_idle` says (zero
/// included): the thread never spins.
const MIN_TICK: Duration = Duration::from_millis(10);

/// The idle thread's handle, held by the store; the thread holds the store
/// only while it tidies.
pub(super) struct Idle {
    stop: AtomicBool,
    wake: Condvar,
    sleeping: Mutex<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Idle {
    /// Starts the thread for `shared` (none when `tidy_when_idle` is unset).
    pub fn start(shared: &Arc<Shared>) -> Arc<Idle> {
        let idle = Arc::new(Idle {
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            sleeping: Mutex::new(()),
            thread: Mutex::new(None),
        });
        let Some(after) = shared.options.tidy_when_idle else { return idle };
        let (me, weak) = (idle.clone(), Arc::downgrade(shared));
        let started = std::thread::Builder::new().name("shoal-idle".into()).spawn(move || run(&me, &weak, after));
        match started {
            Ok(thread) => *lock(&idle.thread) = Some(thread),
            Err(e) => tracing::warn!(error = %e, "cannot start the idle thread; an idle store is not tidied"),
        }
        idle
    }

    /// Stops the thread (waiting for a tidy under way to end).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            let _sleeping = lock(&self.sleeping);
            self.wake.notify_all();
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run(idle: &Idle, store: &Weak<Shared>, after: Duration) {
    // As the compaction thread: it takes the writer lock for a compaction's
    // short phases, so it keeps its CPU share, but does not preempt.
    crate::sys::mark_this_thread_batch();
    // The head version last seen, and since when it has not moved.
    let mut seen: Option<(u64, Instant)> = None;
    let mut measured_at: Option<u64> = None;
    loop {
        {
            let sleeping = lock(&idle.sleeping);
            if idle.stop.load(Ordering::Relaxed) {
                return;
            }
            drop(wait_timeout(&idle.wake, sleeping, TICK.min(after).max(MIN_TICK)));
        }
        if idle.stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(shared) = store.upgrade() else { return };
        let (version, leftovers) = {
            let st = lock(&shared.state);
            (st.head.version, st.generations.spare.is_some() || !st.generations.old.is_empty())
        };
        match seen {
            Some((v, since)) if v == version && since.elapsed() >= after => {}
            Some((v, _)) if v == version => continue,
            _ => {
                seen = Some((version, Instant::now()));
                continue;
            }
        }
        if measured_at != Some(version) {
            measured_at = Some(version);
            if let Err(e) = shared.compact_if_mostly_garbage(&idle.stop) {
                tracing::warn!(error = %e, "compaction of an idle store failed");
            }
        }
        if leftovers || lock(&shared.state).generations.spare.is_some() {
            shared.release_spare();
        }
    }
}

impl Shared {
    /// Compacts when more than half of the arena is garbage, measured by a
    /// walk of what the retained versions reach (on the mapping, unlocked).
    fn compact_if_mostly_garbage(&self, stop: &AtomicBool) -> Result<()> {
        if !self.options.auto_compact || self.publisher.check().is_err() {
            return Ok(());
        }
        let (mapped, head, arena_end) = {
            let st = lock(&self.state);
            (st.arena.mapped.clone(), st.head, st.arena.end())
        };
        let region = mapped.region(head.end)?;
        let chain = retained::policy_chain(&self.options, region, head, &mapped.path)?;
        // The walk holds no lock, so it runs on a thread of its own that
        // takes only CPU time nothing else wants (`SCHED_IDLE`, which a
        // thread cannot leave again): readers and a writer waking up are
        // never preempted by it. This thread keeps its policy for the
        // compaction's locked phases.
        let walked = std::thread::scope(|scope| {
            let walker = std::thread::Builder::new().name("shoal-idle-walk".into()).spawn_scoped(scope, || {
                crate::sys::mark_this_thread_idle();
                walk_reachable_until(region, &mapped.path, &chain, false, stop)
            });
            match walker {
                Ok(walker) => walker.join().unwrap_or(Ok(None)),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot start the idle walk's thread; walking here");
                    walk_reachable_until(region, &mapped.path, &chain, false, stop)
                }
            }
        });
        let Some(reach) = walked? else { return Ok(()) };
        let garbage = arena_end.saturating_sub(reach.bytes);
        if garbage > reach.bytes && garbage >= MIN_GARBAGE {
            self.compact()?;
        }
        lock(&self.state).arena.release_unused_tail();
        Ok(())
    }

    /// Frees the old generations nothing pins and deletes the spare too.
    fn release_spare(&self) {
        let doomed = {
            let mut st = lock(&self.state);
            self.reclaim_generations(&mut st);
            let spare = st.generations.spare.take();
            let mut doomed = std::mem::take(&mut st.generations.doomed);
            doomed.extend(spare);
            doomed
        };
        generations::delete(&self.dir, doomed);
    }
}
