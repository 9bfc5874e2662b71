//! Reading and rewriting an arena file's leaves in place, as a damaged disk
//! or a neighbour process would: tests that check a scan reports what it
//! meets.

#![allow(dead_code)] // each test binary uses its own part

/// CRC-32C, as nodes are sealed with, bit by bit.
pub fn crc32c(data: &[u8], crc: u32) -> u32 {
    let mut crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// Gives a rewritten node a valid checksum, so that only the checks past
/// the checksum can catch what was changed.
pub fn reseal(node: &mut [u8]) {
    let crc = crc32c(&node[..8], crc32c(&node[12..], 0));
    node[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Finds every leaf in an arena file: (file offset, bytes).
pub fn leaves(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 4096;
    while at + 16 <= bytes.len() {
        let kind = bytes[at];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if (1..=5).contains(&kind) && len >= 16 && len.is_multiple_of(8) && at + len <= bytes.len() {
            let node = &bytes[at..at + len];
            let crc = u32::from_le_bytes(node[8..12].try_into().unwrap());
            if crc32c(&node[..8], crc32c(&node[12..], 0)) == crc {
                if kind == 1 {
                    out.push((at, node.to_vec()));
                }
                at += len;
                continue;
            }
        }
        at += 8;
    }
    out
}

/// (offset of entry `i`'s fixed part, its suffix bytes) in a leaf.
pub fn leaf_entry(node: &[u8], i: usize) -> (usize, std::ops::Range<usize>) {
    let count = u16::from_le_bytes([node[2], node[3]]) as usize;
    let prefix = u16::from_le_bytes([node[12], node[13]]) as usize;
    let hints = (16 + prefix).next_multiple_of(8);
    let slots = hints + 8 * count;
    let at = u32::from_le_bytes(node[slots + 4 * i..slots + 4 * i + 4].try_into().unwrap()) as usize;
    let len = u16::from_le_bytes([node[at], node[at + 1]]) as usize;
    let flags = node[at + 2];
    let tail = if flags & 1 != 0 || flags & 2 != 0 { at + 16 } else { at + 8 };
    (at, tail..tail + len)
}

/// The newest arena generation file in a store directory.
pub fn arena_path(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("arena-"))
        .max()
        .unwrap()
}
