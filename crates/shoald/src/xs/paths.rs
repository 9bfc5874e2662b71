//! xenstore paths: which are valid, how relative ones resolve, and where a
//! node's permissions live in the shoal tree.
//!
//! A xenstore node `/a/b` is the shoal node `/a/b`, value for value, so a
//! process on the host reads `/local/domain/7/name` in place. Its
//! permissions are the value of `/.shoald/perms/a/b` (the root's are at
//! `/.shoald/perms`): `.` is not a character xenstore paths may hold, so no
//! client can name, list or watch that subtree.

use crate::wire::XsError;

/// Where the permissions of every node live.
pub const PERMS_ROOT: &str = "/.shoald/perms";
/// Where the permissions of the special names (`@releaseDomain`) live.
pub const SPECIAL_ROOT: &str = "/.shoald/special";
/// Where the root's value lives (shoal keeps its own root's value empty).
pub const ROOT_VALUE: &str = "/.shoald/root";
/// Everything the daemon keeps to itself lies below this.
pub const PRIVATE_ROOT: &str = "/.shoald";
/// The top-level name the daemon keeps to itself (hidden from `/`'s children).
pub const PRIVATE_NAME: &str = ".shoald";

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest path below a domain's home (`XENSTORE_REL_PATH_MAX`): the
/// stock daemons measure a path as `/local/domain/<id>/` plus at most this.
pub const REL_PATH_MAX: usize = 2048;

/// The base of a domain's relative paths, `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

fn valid_chars(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'))
}

/// The length of a `/local/domain/<id>/` prefix (up to five digits, as the
/// stock daemons read it), 0 when there is none.
fn local_prefix_len(path: &str) -> usize {
    let Some(rest) = path.strip_prefix("/local/domain/") else { return 0 };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    "/local/domain/".len() + digits + 1
}

/// Checks an absolute node path the way the stock daemons do: it starts
/// with `/`, has no empty segment and no trailing `/` (except the root),
/// holds only `[A-Za-z0-9-/_@]`, and is at most [`REL_PATH_MAX`] bytes
/// past a `/local/domain/<id>/` prefix (or in all, without one).
pub fn check_node_path(path: &str) -> Result<(), XsError> {
    if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
        return Err(XsError::EINVAL);
    }
    if path.len() > local_prefix_len(path) + REL_PATH_MAX || path.len() > ABS_PATH_MAX {
        return Err(XsError::EINVAL);
    }
    if !valid_chars(path) {
        return Err(XsError::EINVAL);
    }
    // shoal's own rule is stricter only in the length of one segment.
    shoal::path::validate(path).map_err(|_| XsError::EINVAL)?;
    Ok(())
}

/// A path as a request names it, resolved: an absolute node path, or a
/// special watch path (`@introduceDomain`, `@releaseDomain/7`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Node(String),
    Special(String),
}

/// Resolves `path` for a connection whose relative paths are based at
/// `home` (`/local/domain/<domid>`; `None` for connections that have
/// none, which must name absolute paths).
pub fn resolve(path: &str, home: Option<&str>) -> Result<Resolved, XsError> {
    if path.starts_with('@') {
        if !valid_chars(path) || path.len() > ABS_PATH_MAX {
            return Err(XsError::EINVAL);
        }
        return Ok(Resolved::Special(path.to_string()));
    }
    let absolute = if path.starts_with('/') {
        path.to_string()
    } else {
        match home {
            Some(home) if !path.is_empty() => format!("{home}/{path}"),
            _ => return Err(XsError::EINVAL),
        }
    };
    check_node_path(&absolute)?;
    Ok(Resolved::Node(absolute))
}

/// The shoal path holding the permissions of node `path`.
pub fn perms_path(path: &str) -> String {
    if path == "/" {
        PERMS_ROOT.to_string()
    } else {
        format!("{PERMS_ROOT}{path}")
    }
}

/// The parent of a node path other than the root.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether `child` is `parent` or lies below it (xenstore's "is a child of").
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return child.starts_with('/');
    }
    child.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_follow_the_stock_rules() {
        for ok in ["/", "/a", "/a/b-c_d@e", "/local/domain/7/device/vif/0", "/A9"] {
            assert_eq!(check_node_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a", "/a/", "//", "/a//b", "/a b", "/a.b", "/é", "/a\nb", "/a/../b"] {
            assert_eq!(check_node_path(bad), Err(XsError::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn the_length_limit_counts_past_the_domain_prefix() {
        // Without a domain prefix: at the limit, and one over.
        let at = format!("/{}", "a/".repeat(1023) + "a");
        assert_eq!(at.len(), REL_PATH_MAX);
        assert_eq!(check_node_path(&at), Ok(()));
        assert_eq!(check_node_path(&format!("{at}b")), Err(XsError::EINVAL));
        // Below /local/domain/<id>/, 2048 more bytes are allowed.
        let home = "/local/domain/12345/";
        let tail = "b/".repeat(1023) + "bb";
        assert_eq!(tail.len(), REL_PATH_MAX);
        assert_eq!(check_node_path(&format!("{home}{tail}")), Ok(()));
        assert_eq!(check_node_path(&format!("{home}{tail}c")), Err(XsError::EINVAL));
        // Six digits are not a domain id: the prefix does not count.
        let long = format!("/local/domain/123456/{}", "c/".repeat(1100) + "c");
        assert_eq!(check_node_path(&long), Err(XsError::EINVAL));
    }

    #[test]
    fn relative_paths_resolve_against_the_home() {
        let home = Some("/local/domain/7");
        assert_eq!(resolve("name", home), Ok(Resolved::Node("/local/domain/7/name".into())));
        assert_eq!(resolve("/name", home), Ok(Resolved::Node("/name".into())));
        assert_eq!(resolve("name", None), Err(XsError::EINVAL));
        assert_eq!(resolve("", home), Err(XsError::EINVAL));
        assert_eq!(resolve("@releaseDomain", None), Ok(Resolved::Special("@releaseDomain".into())));
        assert_eq!(resolve("@bad path", None), Err(XsError::EINVAL));
    }

    #[test]
    fn parents_children_and_permission_paths() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(is_child("/a", "/"));
        assert!(!is_child("/ab", "/a"));
        assert_eq!(perms_path("/"), "/.shoald/perms");
        assert_eq!(perms_path("/a/b"), "/.shoald/perms/a/b");
        assert_eq!(check_node_path("/.shoald"), Err(XsError::EINVAL));
    }
}
