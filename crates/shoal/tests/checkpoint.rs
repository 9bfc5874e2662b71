//! A checkpoint never steps back: compaction's own checkpoint, written after
//! an unlocked sync, must not replace a newer one taken meanwhile.

use shoal::{internals, Durability, Options, Store};
use std::sync::mpsc;

#[test]
fn a_checkpoint_taken_during_compaction_is_not_undone_by_it() {
    for durability in [Durability::Sync, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), Options { durability, auto_compact: false, create: true, ..Options::default() })
                .unwrap();
        for i in 0..200 {
            let mut t = store.begin();
            t.put(&format!("/k/{i}"), [7u8; 40]).unwrap();
            t.commit().unwrap();
        }
        let (ready, in_window) = mpsc::channel();
        let (go, resume) = mpsc::channel::<()>();
        internals::before_next_compaction_checkpoint(&store, move || {
            ready.send(()).unwrap();
            resume.recv().unwrap();
        });
        std::thread::scope(|s| {
            let compaction = s.spawn(|| store.compact().unwrap());
            // The compaction has switched and synced; its checkpoint is next.
            in_window.recv().unwrap();
            let mut t = store.begin();
            t.put("/after", b"x").unwrap();
            let version = t.commit().unwrap();
            store.checkpoint().unwrap();
            assert_eq!(internals::checkpointed_version(dir.path()).unwrap(), Some(version));
            go.send(()).unwrap();
            let report = compaction.join().unwrap();
            assert!(report.to_generation > report.from_generation);
            assert_eq!(
                internals::checkpointed_version(dir.path()).unwrap(),
                Some(version),
                "{durability:?}: the compaction's checkpoint replaced a newer one"
            );
        });
        drop(store);
        let store = Store::open(dir.path(), Options { durability, create: true, ..Options::default() }).unwrap();
        assert_eq!(store.snapshot().get("/after").unwrap(), Some(&b"x"[..]));
    }
}
