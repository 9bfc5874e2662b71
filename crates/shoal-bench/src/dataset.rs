//! The generated dataset: `N` paths shaped like `/local/domain/<d>/<field>`
//! (four fields per domain), values of a fixed size, all deterministic from
//! a seed. Every engine gets the same paths as the same bytes.

use std::fmt::Write as _;

/// The fields of each domain, in generation order.
pub const FIELDS: [&str; 4] = ["name", "uuid", "memory", "vcpus"];

/// The subtree scanned by the scan row: the dataset's parent.
pub const SCAN_PREFIX: &str = "/local/domain";

/// The key the propagation row commits to (outside the dataset).
pub const SEQ_KEY: &str = "/bench/seq";

/// What defines a dataset. Workers rebuild keys and values from it, so only
/// these three numbers cross process boundaries.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub keys: usize,
    pub value_size: usize,
    pub seed: u64,
}

/// SplitMix64: small, fast, good enough to pick keys and fill values.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Spec {
    /// Writes key `i` into `buf` (cleared first), without allocating when `buf` has room.
    pub fn write_key(&self, i: usize, buf: &mut String) {
        buf.clear();
        let _ = write!(buf, "{SCAN_PREFIX}/{}/{}", i / FIELDS.len(), FIELDS[i % FIELDS.len()]);
    }

    pub fn key(&self, i: usize) -> String {
        let mut s = String::with_capacity(32);
        self.write_key(i, &mut s);
        s
    }

    /// The value of key `i` at "generation" `generation` (0: the loaded dataset).
    pub fn value(&self, i: usize, generation: u64) -> Vec<u8> {
        let mut rng = Rng::new(self.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ generation.rotate_left(32));
        let mut v = Vec::with_capacity(self.value_size);
        while v.len() < self.value_size {
            let word = rng.next_u64().to_le_bytes();
            for b in word {
                if v.len() < self.value_size {
                    v.push(b'a' + b % 26);
                }
            }
        }
        v
    }

    /// `n` random key indices for stream `stream` (each worker process or
    /// thread has its own stream; the same stream gives every engine the
    /// same keys).
    pub fn random_indices(&self, stream: u64, n: usize) -> Vec<usize> {
        let mut rng = Rng::new(self.seed.wrapping_add(stream.wrapping_mul(0x9e37_79b9)).rotate_left(7));
        (0..n).map(|_| rng.below(self.keys)).collect()
    }

    /// `n` random keys of stream `stream`, built outside any timed loop.
    pub fn random_keys(&self, stream: u64, n: usize) -> Vec<String> {
        self.random_indices(stream, n).into_iter().map(|i| self.key(i)).collect()
    }

    /// Bytes of the keys and values as raw data (no per-entry overhead).
    pub fn raw_bytes(&self) -> u64 {
        let mut buf = String::new();
        let mut total = 0u64;
        for i in 0..self.keys {
            self.write_key(i, &mut buf);
            total += buf.len() as u64 + self.value_size as u64;
        }
        total
    }

    /// The whole dataset in memory, for bulk loads.
    pub fn generate(&self) -> Dataset {
        Dataset {
            keys: (0..self.keys).map(|i| self.key(i)).collect(),
            values: (0..self.keys).map(|i| self.value(i, 0)).collect(),
        }
    }
}

/// The dataset materialized: `keys[i]` holds `values[i]`.
pub struct Dataset {
    pub keys: Vec<String>,
    pub values: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let spec = Spec { keys: 10, value_size: 13, seed: 7 };
        assert_eq!(spec.key(0), "/local/domain/0/name");
        assert_eq!(spec.key(5), "/local/domain/1/uuid");
        assert_eq!(spec.value(3, 0), spec.value(3, 0));
        assert_ne!(spec.value(3, 0), spec.value(3, 1));
        assert_eq!(spec.value(3, 0).len(), 13);
        assert_eq!(spec.random_indices(1, 5), spec.random_indices(1, 5));
        assert!(spec.random_indices(2, 100).iter().all(|&i| i < 10));
    }
}
