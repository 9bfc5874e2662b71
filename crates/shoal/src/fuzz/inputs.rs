//! Inputs for the entry points: random bytes, valid samples, and samples
//! mutated the ways damage and forgery change files (bit flips, cut or
//! extended files, length fields overwritten with huge or small values,
//! pieces of two files spliced), optionally with their checksums
//! recomputed so that the mutation reaches the parser behind them.

use super::samples::*;

/// Inputs are kept below this size: the parsers' costs follow their input,
/// and small inputs make more of them per second.
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// A small deterministic generator (SplitMix64): one seed gives the same
/// inputs on every machine, with no dependency.
#[derive(Clone, Debug)]
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A size below `usual`, or one time in `one_in` below `rare`.
    pub fn size(&mut self, usual: usize, rare: usize, one_in: usize) -> usize {
        let bound = if self.chance(one_in) { rare } else { usual };
        self.below(bound)
    }

    /// True one time in `n`.
    pub fn chance(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One parser's entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Leaf,
    Internal,
    Blob,
    Commit,
    Changes,
    Tree,
    CraftedTree,
    Journal,
    MetaSlot,
    Control,
    ReaderTable,
    Settings,
    BufRef,
    Path,
    ArenaHeader,
}

/// An input for a [`Target`]: bytes (text for `Settings` and `Path`, read
/// lossily), and for trees the offset of the root to read.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub bytes: Vec<u8>,
    pub root: u64,
}

impl Target {
    pub const ALL: [Target; 15] = [
        Target::Leaf,
        Target::Internal,
        Target::Blob,
        Target::Commit,
        Target::Changes,
        Target::Tree,
        Target::CraftedTree,
        Target::Journal,
        Target::MetaSlot,
        Target::Control,
        Target::ReaderTable,
        Target::Settings,
        Target::BufRef,
        Target::Path,
        Target::ArenaHeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Leaf => "leaf",
            Target::Internal => "internal",
            Target::Blob => "blob",
            Target::Commit => "commit",
            Target::Changes => "changes",
            Target::Tree => "tree",
            Target::CraftedTree => "crafted_tree",
            Target::Journal => "journal",
            Target::MetaSlot => "meta_slot",
            Target::Control => "control",
            Target::ReaderTable => "reader_table",
            Target::Settings => "settings",
            Target::BufRef => "bufref",
            Target::Path => "path",
            Target::ArenaHeader => "arena_header",
        }
    }

    /// Runs the entry point on `input`.
    pub fn run(self, input: &Input) {
        let text = || String::from_utf8_lossy(&input.bytes);
        match self {
            Target::Leaf => super::leaf(&input.bytes),
            Target::Internal => super::internal(&input.bytes),
            Target::Blob => super::blob(&input.bytes),
            Target::Commit => super::commit(&input.bytes),
            Target::Changes => super::changes(&input.bytes),
            Target::Tree => super::tree(&input.bytes, input.root),
            Target::CraftedTree => super::crafted_tree(&input.bytes, input.root),
            Target::Journal => super::journal(&input.bytes),
            Target::MetaSlot => super::meta_slot(&input.bytes),
            Target::Control => super::control(&input.bytes),
            Target::ReaderTable => super::reader_table(&input.bytes),
            Target::Settings => super::settings(&text()),
            Target::BufRef => super::bufref(&input.bytes),
            Target::Path => super::path(&text()),
            Target::ArenaHeader => super::arena_header(&input.bytes),
        }
    }

    /// A valid encoding, built with the crate's encoders.
    pub fn sample(self, g: &mut Gen) -> Input {
        let bytes = match self {
            Target::Leaf => sample_leaf(g).1,
            Target::Internal => sample_internal(g).1,
            Target::Blob => sample_blob(g).1,
            Target::Commit => sample_region(g).bytes,
            Target::Changes => sample_changes(g).1,
            Target::Tree | Target::CraftedTree => {
                let region = sample_region(g);
                let root = match g.below(4) {
                    0 => region.commit,
                    1 => region.nodes[g.below(region.nodes.len())],
                    _ => region.root,
                };
                return Input { bytes: region.bytes, root };
            }
            Target::Journal => sample_journal(g).1,
            Target::MetaSlot => sample_meta(g).1,
            Target::Control => sample_control(g).4,
            Target::ReaderTable => sample_reader_table(g).2,
            Target::Settings => sample_settings(g).1.into_bytes(),
            Target::BufRef => sample_bufref(g).3,
            Target::Path => sample_path(g).into_bytes(),
            Target::ArenaHeader => arena_header_bytes(g.next_u64(), g.next_u64()),
        };
        Input { bytes, root: 0 }
    }

    /// Random bytes one time in ten, a valid sample one time in ten, else
    /// a mutated sample (its checksums recomputed one time in two).
    pub fn input(self, g: &mut Gen) -> Input {
        match g.below(10) {
            0 => {
                let len = g.size(128, 8192, 4);
                let bytes = g.bytes(len);
                let root = if g.chance(4) { g.next_u64() } else { (g.below(len + 1) as u64) & !7 };
                Input { bytes, root }
            }
            1 => self.sample(g),
            _ => {
                let mut input = self.sample(g);
                let donor = self.sample(g).bytes;
                mutate(&mut input.bytes, g, &donor);
                if g.chance(2) {
                    self.reseal(&mut input.bytes);
                }
                if g.chance(8) {
                    input.root = match g.chance(2) {
                        true => g.next_u64(),
                        false => (g.below(input.bytes.len() + 1) as u64) & !7,
                    };
                }
                input
            }
        }
    }

    /// Recomputes the checksums an encoding of this target carries, where
    /// its (possibly mutated) length fields let them be found.
    pub fn reseal(self, bytes: &mut [u8]) {
        match self {
            Target::Leaf | Target::Internal | Target::Blob | Target::Changes => reseal_node(bytes),
            Target::Journal => {
                let mut at = 24;
                while let Some(len) = crate::node::u32_at(bytes, at) {
                    let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else { break };
                    let crc = crate::node::crc32c_bulk(payload);
                    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                    at += 8 + len as usize;
                }
            }
            Target::MetaSlot => {
                reseal_at(bytes, 0, 56);
                reseal_at(bytes, 512, 56);
            }
            Target::BufRef => reseal_at(bytes, 0, 72),
            Target::ArenaHeader => reseal_at(bytes, 0, 40),
            // Regions are read with checksums trusted by `CraftedTree` and
            // `commit`; the other formats carry none.
            _ => {}
        }
    }
}

/// Recomputes a node's checksum over the length its header states, if the
/// bytes hold that much.
fn reseal_node(bytes: &mut [u8]) {
    let Some(len) = crate::node::u32_at(bytes, 4) else { return };
    let len = len as usize;
    if (crate::node::HEADER_BYTES..=bytes.len()).contains(&len) {
        let crc = crate::node::node_crc(&bytes[..len]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes a CRC32C of `bytes[start..start + n]` stored right after them.
fn reseal_at(bytes: &mut [u8], start: usize, n: usize) {
    if bytes.len() >= start + n + 4 {
        let crc = crc32c::crc32c(&bytes[start..start + n]);
        bytes[start + n..start + n + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A value worth writing into a length or offset field of `width` bytes
/// in an input of `len` bytes.
fn interesting(g: &mut Gen, width: usize, len: usize) -> u64 {
    let max = if width == 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
    let len = len as u64;
    let picks =
        [0, 1, 2, 7, 8, 9, 15, 16, 24, 80, 255, 256, len, len.wrapping_sub(1), len + 1, len / 2, max / 2, max - 1, max];
    match g.below(picks.len() + 3) {
        i if i < picks.len() => picks[i] & max,
        i if i == picks.len() => 1 << g.below(8 * width),
        _ => g.next_u64() & max,
    }
}

/// Applies one to four random mutations to `bytes`; `donor` supplies
/// spliced-in pieces.
pub fn mutate(bytes: &mut Vec<u8>, g: &mut Gen, donor: &[u8]) {
    for _ in 0..1 + g.below(4) {
        let len = bytes.len();
        let at = g.below(len);
        match g.below(9) {
            0 if len > 0 => bytes[at] ^= 1 << g.below(8),
            1 if len > 0 => bytes[at] = [0, 1, 0x7F, 0x80, 0xFF, g.next_u64() as u8][g.below(6)],
            2 => {
                let width = [2, 4, 8][g.below(3)];
                let at = if g.chance(4) { at } else { at / width * width };
                let value = interesting(g, width, len).to_le_bytes();
                if at + width <= len {
                    bytes[at..at + width].copy_from_slice(&value[..width]);
                }
            }
            3 => bytes.truncate(g.below(len + 1)),
            4 => {
                let n = 1 + g.below(64);
                match g.chance(2) {
                    true => bytes.extend(g.bytes(n)),
                    false => bytes.resize(len + n, 0),
                }
            }
            5 if !donor.is_empty() => {
                let (from, n) = (g.below(donor.len()), 1 + g.below(64));
                let piece = &donor[from..donor.len().min(from + n)];
                let end = len.min(at + g.below(64));
                bytes.splice(at..end, piece.iter().copied());
            }
            6 => {
                let end = len.min(at + 1 + g.below(32));
                bytes.drain(at..end);
            }
            7 if len > 0 => {
                let end = len.min(at + 1 + g.below(64));
                let piece = bytes[at..end].to_vec();
                let to = g.below(len + 1);
                bytes.splice(to..to, piece);
            }
            _ => {
                // Crossover: this input's head, the donor's tail.
                let from = g.below(donor.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(&donor[from..]);
            }
        }
    }
    bytes.truncate(MAX_INPUT_BYTES);
}
