//! Files of a store directory: how they are synced.

use std::fs::File;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Makes the directory's entries (files created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
