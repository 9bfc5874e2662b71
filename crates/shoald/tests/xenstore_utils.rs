//! Debian's xenstore-utils (`xenstore-write`, `-read`, `-ls`, ...) against
//! shoald, through `XENSTORED_PATH`, unmodified. `.ci/run` installs them;
//! elsewhere: `apt-get install xenstore-utils`.

mod common;

use std::process::{Command, Output};

use common::Shoald;

fn tool(shoald: &Shoald, name: &str, args: &[&str]) -> Output {
    let program = format!("xenstore-{name}");
    Command::new(&program)
        .args(args)
        .env("XENSTORED_PATH", &shoald.socket)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install Debian's xenstore-utils: apt-get install xenstore-utils)"))
}

/// Runs a tool that must succeed; returns its standard output.
fn ok(shoald: &Shoald, name: &str, args: &[&str]) -> String {
    let out = tool(shoald, name, args);
    assert!(out.status.success(), "xenstore-{name} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn write_read_list_and_remove() {
    let shoald = Shoald::start();
    ok(&shoald, "write", &["/local/domain/7/name", "web-7", "/local/domain/7/memory/target", "1048576"]);
    assert_eq!(ok(&shoald, "read", &["/local/domain/7/name"]), "web-7\n");
    assert_eq!(
        ok(&shoald, "read", &["-p", "/local/domain/7/name", "/local/domain/7/memory/target"]),
        "/local/domain/7/name: web-7\n/local/domain/7/memory/target: 1048576\n"
    );
    assert_eq!(ok(&shoald, "list", &["/local/domain/7"]), "memory\nname\n");
    assert_eq!(
        ok(&shoald, "ls", &["/local"]),
        "domain = \"\"\n 7 = \"\"\n  memory = \"\"\n   target = \"1048576\"\n  name = \"web-7\"\n"
    );
    assert_eq!(
        ok(&shoald, "ls", &["-f", "/local/domain/7"]),
        "/local/domain/7/memory = \"\"\n/local/domain/7/memory/target = \"1048576\"\n/local/domain/7/name = \"web-7\"\n"
    );

    // exists: status only.
    assert!(tool(&shoald, "exists", &["/local/domain/7"]).status.success());
    let missing = tool(&shoald, "exists", &["/local/domain/8"]);
    assert_eq!(missing.status.code(), Some(1));

    // read of a missing node fails with the tool's message.
    let out = tool(&shoald, "read", &["/local/domain/8/name"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "xenstore-read: couldn't read path /local/domain/8/name\n");

    ok(&shoald, "rm", &["/local/domain/7/memory"]);
    assert_eq!(ok(&shoald, "list", &["/local/domain/7"]), "name\n");
    ok(&shoald, "write", &["/local/domain/8/name", "db-8"]);
    ok(&shoald, "rm", &["-t", "/local/domain/7/name"]);
    assert_eq!(ok(&shoald, "list", &["/local/domain"]), "8\n", "-t removes the parents it leaves empty");
    ok(&shoald, "rm", &["-t", "/local/domain/8/name"]);
    assert_eq!(ok(&shoald, "list", &["/"]), "tool\n", "up to the top");
}

#[test]
fn chmod_and_ls_with_permissions() {
    let shoald = Shoald::start();
    ok(&shoald, "write", &["/vm/a", "1", "/vm/a/b", "2"]);
    ok(&shoald, "chmod", &["/vm", "b5", "r7"]);
    let listing = ok(&shoald, "ls", &["-p", "/"]);
    assert!(listing.contains("vm = \"\""), "{listing}");
    assert!(listing.contains("(b5,r7)"), "{listing}");
    // -r applies to the subtree.
    ok(&shoald, "chmod", &["-r", "/vm", "n3"]);
    let listing = ok(&shoald, "ls", &["-p", "/vm"]);
    assert_eq!(listing.matches("(n3)").count(), 2, "{listing}");
    // A malformed permission is refused by the daemon.
    let out = tool(&shoald, "chmod", &["/vm", "x3"]);
    assert!(!out.status.success());
}

/// The transcript of `golden/xenstore-utils.sh` (every tool, odd values,
/// bad paths, permissions, removals) is the stock C daemon's, byte for byte.
#[test]
fn the_golden_transcript_matches_cxenstored() {
    let shoald = Shoald::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/xenstore-utils.sh");
    let out = Command::new("bash").arg(script).env("XENSTORED_PATH", &shoald.socket).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = String::from_utf8(out.stdout).unwrap();
    let theirs = include_str!("golden/cxenstored.txt");
    if ours != theirs {
        let first = ours.lines().zip(theirs.lines()).position(|(a, b)| a != b);
        panic!("transcripts differ (first at line {first:?}):\n--- shoald\n{ours}\n--- cxenstored\n{theirs}");
    }
}
