//! Who may read a store: readers of another user in the store's group read
//! it; others get a clear permission error. A writer refuses a directory it
//! does not own or that others may write, and never follows a symbolic
//! link planted among the store's files.
//!
//! Readers run as other users, so these tests need root (as CI runs).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use shoal::{Error, Options, Store};

const READ_ONCE: &str = env!("CARGO_BIN_EXE_read-once");
const GROUP: u32 = 4242;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
}

/// A temporary directory other users may traverse, with a store in it.
fn shared_base() -> tempfile::TempDir {
    assert!(is_root(), "these tests run readers as other users, which needs root");
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    base
}

/// Runs `read-once STORE /k` as `uid`:`gid`; returns its output line and success.
fn read_as(store: &Path, uid: u32, gid: u32) -> (String, bool) {
    let out =
        std::process::Command::new(READ_ONCE).args([store.to_str().unwrap(), "/k"]).uid(uid).gid(gid).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), out.status.success())
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn group_readers_read_and_others_are_refused_clearly() {
    let base = shared_base();
    let store_dir = base.path().join("store");
    let options = Options { mode: 0o750, group: Some(GROUP), ..Options::default() };
    let store = Store::create(&store_dir, options).unwrap();
    let mut txn = store.begin();
    txn.put("/k", "v").unwrap();
    txn.commit().unwrap();
    // Modes follow the directory's, whatever the umask.
    assert_eq!(mode_of(&store_dir), 0o2750);
    assert_eq!(mode_of(&store_dir.join("control")), 0o640);
    assert_eq!(mode_of(&store_dir.join("readers")), 0o660);
    assert_eq!(mode_of(&store_dir.join("journal")), 0o640);
    assert_eq!(mode_of(&store_dir.join("lock")), 0o600);

    assert_eq!(read_as(&store_dir, 4343, GROUP), ("value v".to_string(), true));
    // A mode someone loosened is tightened again by the writer's next open.
    drop(store);
    std::fs::set_permissions(store_dir.join("arena-0000000001"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(store_dir.join("meta"), std::fs::Permissions::from_mode(0o666)).unwrap();
    drop(Store::open(&store_dir, Options::default()).unwrap());
    assert_eq!(mode_of(&store_dir.join("arena-0000000001")), 0o640);
    assert_eq!(mode_of(&store_dir.join("meta")), 0o640);
    let (line, ok) = read_as(&store_dir, 4344, 4545);
    assert!(!ok && line.contains("permission denied"), "an outsider got: {line}");
    assert!(!line.contains("no shoal store"), "{line}");

    // The default is private: no other user may read.
    let private = base.path().join("private");
    let store = Store::create(&private, Options::default()).unwrap();
    drop(store);
    assert_eq!(mode_of(&private), 0o700);
    assert_eq!(mode_of(&private.join("arena-0000000001")), 0o600);
    let (line, ok) = read_as(&private, 4343, GROUP);
    assert!(!ok && line.contains("permission denied"), "{line}");
}

#[test]
fn a_writer_refuses_a_directory_it_does_not_own_or_others_may_write() {
    let base = shared_base();
    let dir = base.path().join("store");
    drop(Store::create(&dir, Options::default()).unwrap());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    match Store::open(&dir, Options::default()) {
        Err(e @ Error::Access { .. }) => assert!(e.to_string().contains("writable by other users"), "{e}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.version())),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(4343), None).unwrap();
    match Store::open(&dir, Options::default()) {
        Err(e @ Error::Access { .. }) => assert!(e.to_string().contains("belongs to user 4343"), "{e}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.version())),
    }
    assert!(matches!(
        Store::create(base.path().join("loose"), Options { mode: 0o770, ..Options::default() }),
        Err(Error::InvalidOption { name: "mode", .. })
    ));
}

#[test]
fn planted_symbolic_links_are_refused_not_followed() {
    let base = shared_base();
    let victim = base.path().join("victim");
    for name in ["lock", "control", "meta", "settings", "readers", "journal"] {
        let dir = base.path().join(format!("store-{name}"));
        drop(Store::create(&dir, Options::default()).unwrap());
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
        match Store::open(&dir, Options::default()) {
            Err(e @ Error::Access { .. }) => assert!(e.to_string().contains("symbolic link"), "{name}: {e}"),
            other => panic!("{name}: expected a refusal, got {:?}", other.map(|s| s.version())),
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}: the link was followed");
    }
    // A link planted where a temporary file goes is removed, not written through.
    let dir = base.path().join("store-tmp");
    drop(Store::create(&dir, Options::default()).unwrap());
    std::os::unix::fs::symlink(&victim, dir.join("settings.tmp")).unwrap();
    let replaced = Options { retain_versions: 3, replace_settings: true, ..Options::default() };
    drop(Store::open(&dir, replaced).unwrap());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // And a link in place of a creation marker.
    let fresh = base.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::os::unix::fs::symlink(&victim, fresh.join("initializing")).unwrap();
    assert!(matches!(Store::create(&fresh, Options::default()), Err(Error::Access { .. })));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_store_is_made_only_in_a_new_or_empty_directory() {
    let base = shared_base();
    let dir = base.path().join("notes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    match Store::create(&dir, Options::default()) {
        Err(e @ Error::Access { .. }) => assert!(e.to_string().contains("notes.txt"), "{e}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.version())),
    }
    assert_eq!(mode_of(&dir), 0o755, "a refused directory was changed");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a refused directory was filled");
    // A store whose checkpoint is gone is damaged, not absent.
    let store_dir = base.path().join("damaged");
    drop(Store::create(&store_dir, Options::default()).unwrap());
    std::fs::remove_file(store_dir.join("meta")).unwrap();
    assert!(matches!(Store::open(&store_dir, Options::default()), Err(Error::Corrupt { .. })));
}
