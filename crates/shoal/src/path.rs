//! Paths and their key encoding.
//!
//! A path is `/` (the root) or `/seg/seg/...`: UTF-8 segments, none empty,
//! none `.` or `..`, none containing `/` or a control character (U+0000 to
//! U+001F and U+007F: a newline in a name would break every line-based
//! listing of paths), at most
//! [`MAX_SEGMENT_BYTES`] each and [`MAX_PATH_BYTES`] in all. Anything else
//! is rejected with [`Error::InvalidPath`]: shoal does not resolve `.` and
//! `..`, and storing them as names would make `/a/../b` a different node
//! from `/b` for one tool and the same for the next.
//!
//! Inside the tree a path is stored as its *key*: the path without its leading
//! `/`, with each separator replaced by the byte `0x00`. Because segments
//! never contain NUL, plain byte order on keys is path order: a node sorts
//! before its children, children sort by segment bytes, and a subtree is the
//! contiguous key range `[K, K ++ 0x01)`. The root's key is empty.
//!
//! Reads compare a stored key with a path on the fly ([`cmp_key_path`]) so
//! that a lookup needs no buffer and no allocation.

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// Longest accepted path, in bytes (xenstore's absolute-path limit).
pub const MAX_PATH_BYTES: usize = 3072;
/// Longest key: a path's key drops its leading `/`.
pub const MAX_KEY_BYTES: usize = MAX_PATH_BYTES - 1;
/// Longest accepted segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;

fn invalid(path: &str, reason: &'static str) -> Error {
    Error::InvalidPath { path: path.chars().take(200).collect(), reason }
}

/// Checks `path` and returns it without its leading `/` (empty for the root).
pub fn validate(path: &str) -> Result<&[u8]> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(invalid(path, "must start with '/'"));
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(invalid(path, "longer than 3072 bytes"));
    }
    let rest = &bytes[1..];
    if rest.is_empty() {
        return Ok(rest);
    }
    for segment in rest.split(|&b| b == b'/') {
        if segment.is_empty() {
            return Err(invalid(path, "empty segment (a trailing '/' or '//')"));
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(invalid(path, "segment longer than 255 bytes"));
        }
        if segment.contains(&0) {
            return Err(invalid(path, "contains a NUL byte"));
        }
        if segment.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(invalid(path, "contains a control character (such as a newline or a tab)"));
        }
        if segment == b"." || segment == b".." {
            return Err(invalid(path, "'.' and '..' are not allowed as segments"));
        }
    }
    Ok(rest)
}

/// The key of a validated path body (as returned by [`validate`]).
pub fn key_of(body: &[u8]) -> Vec<u8> {
    body.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

/// Calls `f` with the key of a validated path body, encoded on the stack
/// when short (no allocation on the read path).
#[inline]
pub fn with_key<R>(body: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const STACK_KEY_BYTES: usize = 256;
    if body.len() <= STACK_KEY_BYTES {
        let mut buf = [0u8; STACK_KEY_BYTES];
        let key = &mut buf[..body.len()];
        key.copy_from_slice(body);
        for b in key.iter_mut() {
            if *b == b'/' {
                *b = 0;
            }
        }
        f(key)
    } else {
        f(&key_of(body))
    }
}

/// Validates `path` and calls `f` with its key, in one pass over the bytes
/// into a stack buffer when the path is short: the read path's version of
/// [`validate`] + [`with_key`]. Errors are [`validate`]'s.
#[inline]
pub fn with_valid_key<R>(path: &str, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    const STACK_KEY_BYTES: usize = 256;
    let bytes = path.as_bytes();
    if bytes.len() < 2 || bytes.len() > STACK_KEY_BYTES + 1 || bytes[0] != b'/' {
        return validate(path).map(|body| with_key(body, f));
    }
    let body = &bytes[1..];
    let mut buf = [0u8; STACK_KEY_BYTES];
    // `dots`: the segment so far is all dots (`.` and `..` are refused).
    let (mut segment, mut dots, mut ok) = (0usize, true, true);
    for (out, &b) in buf.iter_mut().zip(body) {
        if b == b'/' {
            ok &= segment != 0 && !(dots && segment <= 2);
            segment = 0;
            dots = true;
            *out = 0;
        } else {
            ok &= b >= 0x20 && b != 0x7f;
            segment += 1;
            dots &= b == b'.';
            *out = b;
        }
    }
    ok &= segment != 0 && segment <= MAX_SEGMENT_BYTES && !(dots && segment <= 2);
    // Only the last segment can exceed 255 bytes in a body of at most 256
    // bytes (any other is followed by '/' and one more byte); checked above.
    if !ok {
        return validate(path).map(|body| with_key(body, f));
    }
    Ok(f(&buf[..body.len()]))
}

/// Validates `path` and returns its key.
pub fn key(path: &str) -> Result<Vec<u8>> {
    validate(path).map(key_of)
}

/// The path of a key.
pub fn path_of(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    out.push('/');
    // Keys are built only from validated UTF-8 paths; a damaged key is shown lossily.
    let text = String::from_utf8_lossy(key);
    out.extend(text.chars().map(|c| if c == '\0' { '/' } else { c }));
    out
}

/// Compares a stored key with a path body (as from [`validate`]), as if the
/// body were encoded into a key.
#[inline]
pub fn cmp_key_path(key: &[u8], body: &[u8]) -> Ordering {
    let n = key.len().min(body.len());
    let mut start = 0;
    while start < n {
        let end = match body[start..n].iter().position(|&b| b == b'/') {
            Some(p) => start + p,
            None => n,
        };
        match key[start..end].cmp(&body[start..end]) {
            Ordering::Equal => {}
            other => return other,
        }
        if end == n {
            break;
        }
        // body[end] is a separator, which encodes as 0.
        match key[end].cmp(&0) {
            Ordering::Equal => {}
            other => return other,
        }
        start = end + 1;
    }
    key.len().cmp(&body.len())
}

/// The exclusive upper bound of the subtree rooted at `key`; `None` for the
/// root, whose subtree is everything.
pub fn subtree_end(key: &[u8]) -> Option<Vec<u8>> {
    if key.is_empty() {
        return None;
    }
    let mut end = key.to_vec();
    end.push(1);
    Some(end)
}

/// Whether `candidate` lies in the subtree rooted at `root` (itself included).
pub fn in_subtree(candidate: &[u8], root: &[u8]) -> bool {
    root.is_empty() || (candidate.starts_with(root) && (candidate.len() == root.len() || candidate[root.len()] == 0))
}

/// The key prefix shared by all children of `key`.
pub fn child_prefix(key: &[u8]) -> Vec<u8> {
    let mut prefix = key.to_vec();
    if !key.is_empty() {
        prefix.push(0);
    }
    prefix
}

/// The parent key of a non-root key.
pub fn parent(key: &[u8]) -> &[u8] {
    match key.iter().rposition(|&b| b == 0) {
        Some(p) => &key[..p],
        None => &[],
    }
}

/// The proper, non-root ancestors of `key`, nearest the root first.
pub fn ancestors(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.iter().enumerate().filter(|(_, &b)| b == 0).map(move |(i, _)| &key[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The one-pass read path agrees with `validate` + `with_key`, errors included.
    #[test]
    fn one_pass_key_matches_validate() {
        let long = format!("/{}", "a".repeat(256));
        let long_first = format!("/{}/b", "a".repeat(254));
        let too_long_last = format!("/b/{}", "a".repeat(256));
        let cases = [
            "/a\nb",
            "/a\tb",
            "/\x1f",
            "/a/\x7f",
            "/\u{80}",
            "/a b",
            "/",
            "",
            "a",
            "/a",
            "/a/b",
            "//",
            "/a//b",
            "/a/",
            "/a\0b",
            "/é/ü",
            &long,
            &long_first,
            &too_long_last,
            "/.",
            "/..",
            "/...",
            "/a/./b",
            "/a/../b",
            "/a/..",
            "/./a",
            "/.a",
            "/a.",
            "/..a",
            "/a/.b.",
            "/.../x",
        ];
        for case in cases {
            let fast = with_valid_key(case, |k| k.to_vec()).map_err(|e| e.to_string());
            let slow = validate(case).map(|body| with_key(body, |k| k.to_vec())).map_err(|e| e.to_string());
            assert_eq!(fast, slow, "{case:?}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["", "a", "//", "/a/", "/a//b", "/a\0b", "/.", "/..", "/a/../b", "/a/./b", "/a/.."] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["/a\nb", "/tab\there", "/a/\x7f", "/\x01"] {
            assert!(validate(bad).unwrap_err().to_string().contains("control character"), "{bad:?}");
        }
        for good in ["/...", "/.a", "/a.", "/..a", "/a/.b./c", "/a b", "/é", "/\u{a0}"] {
            assert!(validate(good).is_ok(), "{good:?} refused");
        }
        let long_dots = format!("/{}/..", "a".repeat(300));
        assert!(validate(&long_dots).is_err());
        assert!(validate(&format!("/{}", "x".repeat(256))).is_err());
        assert!(validate(&"/abcdefgh".repeat(400)).is_err());
        assert_eq!(validate("/").unwrap(), b"");
        assert_eq!(validate("/a/b").unwrap(), b"a/b");
    }

    #[test]
    fn key_round_trip_and_helpers() {
        let k = key("/local/domain/7").unwrap();
        assert_eq!(k, b"local\0domain\x007");
        assert_eq!(path_of(&k), "/local/domain/7");
        assert_eq!(parent(&k), b"local\0domain");
        let ancestors: Vec<_> = ancestors(&k).collect();
        assert_eq!(ancestors, vec![&b"local"[..], &b"local\0domain"[..]]);
        assert!(in_subtree(&k, b"local"));
        assert!(!in_subtree(b"localx", b"local"));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-c/ -]{1,3}".prop_map(|s| s.replace('/', "-"))
    }

    proptest! {
        #[test]
        fn path_order_is_key_order(a in proptest::collection::vec(segment(), 0..4),
                                   b in proptest::collection::vec(segment(), 0..4)) {
            let pa = format!("/{}", a.join("/"));
            let pb = format!("/{}", b.join("/"));
            let ka = key(&pa).unwrap();
            let kb = key(&pb).unwrap();
            // On-the-fly comparison agrees with comparing encoded keys.
            prop_assert_eq!(cmp_key_path(&ka, validate(&pb).unwrap()), ka.cmp(&kb));
            // Key order is segment-wise order.
            prop_assert_eq!(ka.cmp(&kb), a.iter().map(|s| s.as_bytes()).cmp(b.iter().map(|s| s.as_bytes())));
        }
    }
}
