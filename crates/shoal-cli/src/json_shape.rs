//! How paths and values look in JSON, for `import` and `export`.
//!
//! JSON tree: nested objects are nodes, their keys the child names. A string
//! leaf is a value; numbers and booleans are written as parsed (integers
//! exactly up to 64 bits, other numbers as the nearest double, in Rust's
//! shortest form),
//! `null` as an empty value, an array as children named `0`, `1`, ... A node
//! that has both a value and children holds its own value under the key
//! `"@value"` (or `"@value_base64"` for bytes that are not UTF-8).
//!
//! JSON lines: one `{"path": "/a/b", "value": "..."}` per line (or
//! `"value_base64"` instead of `"value"`).
//!
//! `export --format tree` writes the same convention, so export then import
//! reproduces the subtree.

/// Key holding a node's own value in the tree format.
pub const VALUE_KEY: &str = "@value";
/// The same, base64-encoded, for values that are not UTF-8.
pub const VALUE_B64_KEY: &str = "@value_base64";

pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Standard base64 (RFC 4648, with padding).
pub mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let chunks = bytes.len() / 4;
        let mut out = Vec::with_capacity(chunks * 3);
        for (ci, chunk) in bytes.chunks(4).enumerate() {
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && ci + 1 != chunks) {
                return None;
            }
            let mut n = 0u32;
            for &c in &chunk[..4 - pad] {
                n = n << 6 | sextet(c)?;
            }
            n <<= 6 * pad;
            out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc4648_vectors() {
            let cases = [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ];
            for (plain, coded) in cases {
                assert_eq!(encode(plain.as_bytes()), coded);
                assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()));
            }
        }

        #[test]
        fn round_trips_all_bytes_and_rejects_garbage() {
            let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
            for len in 0..data.len() {
                assert_eq!(decode(&encode(&data[..len])).as_deref(), Some(&data[..len]));
            }
            for bad in ["Zg=", "Z===", "Zg==Zg==", "Z!==", "A=B="] {
                assert_eq!(decode(bad), None, "{bad:?}");
            }
        }
    }
}
