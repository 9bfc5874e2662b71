//! A writer's crash and a machine's reboot, as recovery tests stage them.

use std::os::unix::fs::FileExt;
use std::path::Path;

use shoal::Store;

/// As after a reboot: the boot id the writer stamped no longer matches.
pub fn forget_boot(dir: &Path) {
    let control = std::fs::OpenOptions::new().write(true).open(dir.join("control")).unwrap();
    control.write_all_at(&[0u8; 16], 32).unwrap();
}

/// Leaks a writer without its closing checkpoint (as a crash would) and frees its lock.
pub fn crash(store: Store, dir: &Path) {
    std::mem::forget(store);
    std::fs::remove_file(dir.join("lock")).unwrap();
}
