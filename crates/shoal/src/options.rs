//! How a writer opens a store: [`Options`] and [`Durability`].
//!
//! Most options are *settings* of the store: recorded in its `settings`
//! file when it is created, and kept by every later open unless it asks to
//! replace them ([`Options::replace_settings`]). The others (`create`,
//! `replace_settings`, `lock_wait`) concern one open only.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::retention::{self, RetainTier};

/// When a commit counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No journal: commits are published at once and survive a crash of the
    /// writer process (the page cache keeps them), but only checkpoints
    /// (taken on close, on compaction, or by [`Store::checkpoint`]) survive a
    /// power loss. For caches and tmpfs.
    None,
    /// A commit returns only after its journal record is on disk.
    Sync,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the store, with these settings, if the directory holds none.
    /// Default `false`: a misspelled path is an error, not a new empty
    /// store. [`crate::Store::create`] creates a store and refuses an
    /// existing one.
    pub create: bool,
    /// Replace the settings recorded in an existing store with the ones
    /// given here (and record them). Default `false`: an existing store
    /// keeps the settings it was created or last configured with, whatever
    /// the rest of these options say.
    pub replace_settings: bool,
    /// How long to wait for another writer to release the store's lock
    /// before failing with [`Error::Locked`]. Default zero: fail at once;
    /// but a lock that this very process recorded is waited for at least
    /// half a second, since a store the process closed stays locked while a
    /// child it is starting holds a copy of the lock file (between fork and
    /// exec).
    pub lock_wait: Duration,
    /// Who may read a store this open creates: the mode of its directory
    /// (its files get matching modes, see [`crate::files`]). Default 0o700:
    /// its owner only. 0o750 lets the directory's group read it; group or
    /// other write bits are refused. An existing store keeps its
    /// directory's mode; after an open this holds it.
    pub mode: u32,
    /// The group of a store this open creates (a gid); `None`: the
    /// creating process's. With a group-readable `mode`, readers in this
    /// group may read the store.
    pub group: Option<u32>,
    /// Default [`Durability::Sync`].
    pub durability: Durability,
    /// Versions kept readable besides the newest (at least this many). Default 16.
    pub retain_versions: u32,
    /// Older versions kept by compaction, thinned by age (see
    /// [`crate::retention`]): e.g. one a minute for an hour and one an hour
    /// for a day. Each kept version keeps the nodes it reaches, so space
    /// grows with how much the data changed between them. Default none.
    pub retain_tiers: Vec<RetainTier>,
    /// Largest value accepted. Default 1 MiB; at most 1 GiB.
    pub max_value_bytes: usize,
    /// Address space reserved per arena generation; the arena cannot grow
    /// beyond it (compaction or a reopen with a larger value moves to a new
    /// generation). Default 64 GiB; costs address space only.
    pub map_reserve_bytes: u64,
    /// Checkpoint when the journal exceeds this. Default 64 MiB.
    pub checkpoint_journal_bytes: u64,
    /// Compact automatically when the arena exceeds both `compact_min_bytes`
    /// and `compact_factor` times the live bytes measured at the last
    /// compaction. Default `true`.
    pub auto_compact: bool,
    /// Default 64 MiB.
    pub compact_min_bytes: u64,
    /// Default 2.
    pub compact_factor: u64,
    /// Once no commit has come for this long, tidy the store: compact if
    /// more than half of the arena is garbage (and at least 1 MiB; only
    /// with `auto_compact`), and delete the spare
    /// generation file and every old one no reader pins, so that an idle
    /// store's files hold about twice its live data. Default 2 s; `None`:
    /// never. Not recorded in the store's settings.
    pub tidy_when_idle: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: false,
            replace_settings: false,
            lock_wait: Duration::ZERO,
            mode: 0o700,
            group: None,
            durability: Durability::Sync,
            retain_versions: 16,
            retain_tiers: Vec::new(),
            max_value_bytes: 1 << 20,
            map_reserve_bytes: 64 << 30,
            checkpoint_journal_bytes: 64 << 20,
            auto_compact: true,
            compact_min_bytes: 64 << 20,
            compact_factor: 2,
            tidy_when_idle: Some(Duration::from_secs(2)),
        }
    }
}

impl Options {
    /// These options' settings, with the per-open fields of `open`.
    pub(crate) fn with_open_fields_of(self, open: &Options) -> Options {
        Options {
            create: open.create,
            replace_settings: open.replace_settings,
            lock_wait: open.lock_wait,
            mode: open.mode,
            group: open.group,
            tidy_when_idle: open.tidy_when_idle,
            ..self
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidOption { name, reason });
        if self.retain_versions == 0 {
            return bad("retain_versions", "must be at least 1".into());
        }
        retention::validate(&self.retain_tiers)?;
        if self.max_value_bytes > 1 << 30 {
            return bad("max_value_bytes", "must be at most 1 GiB".into());
        }
        if self.map_reserve_bytes < 1 << 20 || self.map_reserve_bytes > 1 << 43 {
            return bad("map_reserve_bytes", "must be between 1 MiB and 8 TiB".into());
        }
        if self.map_reserve_bytes < self.max_value_bytes as u64 * 4 {
            return bad("map_reserve_bytes", "must hold at least four maximum-size values".into());
        }
        if self.mode & !0o777 != 0 || self.mode & 0o700 != 0o700 || self.mode & 0o022 != 0 {
            return bad(
                "mode",
                format!("{:o}: the owner needs rwx (0o700), and nobody else may write the store directory", self.mode),
            );
        }
        if self.compact_factor < 2 {
            return bad("compact_factor", "must be at least 2".into());
        }
        Ok(())
    }
}
