//! Value blobs: a value stored outside its leaf (longer than
//! [`INLINE_VALUE_MAX`](super::INLINE_VALUE_MAX)).
//!
//! ```text
//! header (count 0, prefix_len 0)
//! 16   the value's bytes, then zero padding to a multiple of 8
//! ```
//!
//! The leaf entry holds the value's length; a large value's blob is placed
//! so that the value starts on a page boundary.

use super::{seal, write_header, Damage, Parse, Region, ValueRepr, HEADER_BYTES, KIND_BLOB};

/// Values at least this long start on a page boundary of the arena file
/// (their blob is preceded by unreferenced zero padding), so a
/// [`crate::BufRef`] to one covers whole pages: `sendfile`, `splice` or a
/// receiver's own `mmap` of those pages moves them without copying partial
/// ones. At most a page of padding per such value, under 25% of it (with
/// 4 KiB pages; see [`page_aligned`] for larger ones).
pub const PAGE_ALIGNED_VALUE_MIN: usize = 16 << 10;

/// Whether a value of `len` bytes is stored page-aligned: at least
/// [`PAGE_ALIGNED_VALUE_MIN`] and four pages, so padding stays under 25%.
pub fn page_aligned(len: usize, page: u64) -> bool {
    len >= PAGE_ALIGNED_VALUE_MIN && len as u64 >= 4 * page
}
/// The bytes of a value.
#[inline(always)]
pub fn value_bytes<'a>(region: Region<'a>, value: ValueRepr<'a>) -> Parse<&'a [u8]> {
    match value {
        ValueRepr::Inline(bytes) => Ok(bytes),
        ValueRepr::Blob { offset, len } => {
            let blob = region.node(offset, KIND_BLOB)?;
            blob.get(HEADER_BYTES..HEADER_BYTES + len as usize)
                .ok_or_else(|| Damage::new(offset, "value blob shorter than its value"))
        }
    }
}

/// Encodes a value blob.
pub fn build_blob(value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES + value.len() + 8);
    write_header(&mut buf, KIND_BLOB, 0, 0);
    buf.extend_from_slice(value);
    seal(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_layout() {
        let b = build_blob(b"hello");
        assert_eq!((b[0], b.len()), (KIND_BLOB, 24));
        assert_eq!(&b[16..21], b"hello");
        assert_eq!(&b[21..], &[0, 0, 0]);
        let mut region = vec![0u8; 8];
        region.extend_from_slice(&b);
        let value = value_bytes(Region::for_test(&region), ValueRepr::Blob { offset: 8, len: 5 }).unwrap();
        assert_eq!(value, b"hello");
        assert!(value_bytes(Region::for_test(&region), ValueRepr::Blob { offset: 8, len: 9 }).is_err());
    }
}
