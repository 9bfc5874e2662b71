//! Property tests of every parser of bytes that come from a file or a
//! handle (through `shoal::fuzz`): random bytes and mutated valid
//! encodings never make one panic or run on (a hang would stall the
//! test), valid encodings round-trip, and a flipped bit in a checksummed
//! encoding is refused rather than read as other data. The runner
//! `examples/fuzz_parsers.rs` runs the same entry points for millions of
//! inputs (see RELIABILITY.md).

use proptest::collection::vec;
use proptest::prelude::*;
use shoal::fuzz::{self, Gen, Target};

/// One way a file or handle gets damaged or forged.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Truncate {
        to: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
    /// A length or offset field of `width` bytes overwritten.
    Field {
        at: usize,
        width: usize,
        value: u64,
    },
    /// Bytes of another valid encoding (from `seed`) written over a range.
    Splice {
        at: usize,
        len: usize,
        seed: u64,
        from: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        Just(0u64),
        Just(1),
        Just(7),
        Just(8),
        Just(16),
        Just(u16::MAX as u64),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(1 << 40),
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
        (any::<usize>(), prop_oneof![Just(2usize), Just(4), Just(8)], value)
            .prop_map(|(at, width, value)| Mutation::Field { at, width, value }),
        (any::<usize>(), 0..64usize, any::<u64>(), any::<usize>()).prop_map(|(at, len, seed, from)| Mutation::Splice {
            at,
            len,
            seed,
            from
        }),
    ]
}

fn apply(target: Target, bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match *m {
        Mutation::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
        Mutation::Truncate { to } => bytes.truncate(to % (len + 1)),
        Mutation::Extend { bytes: ref more } => bytes.extend_from_slice(more),
        Mutation::Field { at, width, value } if len >= width => {
            // Fields sit at multiples of their width in every format here.
            let at = (at % (len - width + 1)) / width * width;
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        Mutation::Splice { at, len: n, seed, from } => {
            let donor = target.sample(&mut Gen::new(seed)).bytes;
            let from = from % (donor.len() + 1);
            let piece = &donor[from..donor.len().min(from + n)];
            let at = at % (len + 1);
            bytes.splice(at..len.min(at + n), piece.iter().copied());
        }
        _ => {}
    }
}

/// A valid sample of `target`, damaged by `mutations`, its checksums
/// recomputed when `reseal` (a forger's bytes, not an accident's).
fn mutated(target: Target, seed: u64, mutations: &[Mutation], reseal: bool) -> fuzz::Input {
    let mut input = target.sample(&mut Gen::new(seed));
    for m in mutations {
        apply(target, &mut input.bytes, m);
    }
    if reseal {
        target.reseal(&mut input.bytes);
    }
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048), root in any::<u64>()) {
        for target in Target::ALL {
            target.run(&fuzz::Input { bytes: bytes.clone(), root: (root % (bytes.len() as u64 + 16)) & !7 });
            target.run(&fuzz::Input { bytes: bytes.clone(), root });
        }
    }

    #[test]
    fn mutated_encodings_never_panic(seed in any::<u64>(), mutations in vec(mutation(), 1..6), reseal in any::<bool>()) {
        for target in Target::ALL {
            target.run(&mutated(target, seed, &mutations, reseal));
        }
    }

    #[test]
    fn the_runners_inputs_never_panic(seed in any::<u64>()) {
        for target in Target::ALL {
            target.run(&target.input(&mut Gen::new(seed)));
        }
    }

    #[test]
    fn nodes_round_trip(seed in any::<u64>()) {
        let g = &mut Gen::new(seed);
        let (entries, leaf) = fuzz::sample_leaf(g);
        prop_assert_eq!(fuzz::decode_leaf(&leaf, 1 << 40), Ok(entries));
        let (children, internal) = fuzz::sample_internal(g);
        prop_assert_eq!(fuzz::decode_internal(&internal, 1 << 40), Ok(children));
        let (changes, node) = fuzz::sample_changes(g);
        prop_assert_eq!(fuzz::decode_changes(&node), Ok((false, changes)));
    }

    #[test]
    fn trees_round_trip(seed in any::<u64>()) {
        let region = fuzz::sample_region(&mut Gen::new(seed));
        prop_assert_eq!(fuzz::walk_all(&region.bytes, region.root), Ok(region.expected.clone()));
        let commit = fuzz::decode_commit(&region.bytes, region.commit).unwrap();
        prop_assert_eq!((commit.version, commit.root, commit.end), (2, region.root, region.bytes.len() as u64));
        let older = fuzz::decode_commit(&region.bytes, commit.prev).unwrap();
        prop_assert_eq!(older.version, 1);
    }

    /// Any damage the checksum does not cover is refused; with checksums
    /// recomputed, a tree reads as some tree or as damage, never as a panic.
    #[test]
    fn a_flipped_bit_in_a_tree_region_is_refused(seed in any::<u64>(), at in any::<usize>(), bit in 0..8u8) {
        let region = fuzz::sample_region(&mut Gen::new(seed));
        let mut bytes = region.bytes.clone();
        let at = 8 + at % (bytes.len() - 8);
        bytes[at] ^= 1 << bit;
        let read = fuzz::walk_all(&bytes, region.root);
        // Bytes no node of the newest tree holds (the older commit record,
        // the change set, the newest record) leave the walk as it was.
        prop_assert!(read.is_err() || read == Ok(region.expected.clone()), "flip at {} read as other data", at);
    }

    #[test]
    fn journals_round_trip_and_a_flip_loses_only_the_tail(seed in any::<u64>(), at in any::<usize>(), bit in 0..8u8) {
        let (records, bytes) = fuzz::sample_journal(&mut Gen::new(seed));
        prop_assert_eq!(fuzz::decode_journal(&bytes), Ok(records.clone()));
        let mut damaged = bytes.clone();
        let at = at % damaged.len();
        damaged[at] ^= 1 << bit;
        // A replay is a prefix of what was written, or refused.
        if let Ok(replayed) = fuzz::decode_journal(&damaged) {
            prop_assert!(replayed.len() <= records.len() && replayed[..] == records[..replayed.len()]);
            prop_assert!(replayed.len() < records.len() || at < 32, "flip at {} went unnoticed", at);
        }
    }

    #[test]
    fn meta_slots_round_trip_and_refuse_a_flip(seed in any::<u64>(), at in 0..60usize, bit in 0..8u8) {
        let (checkpoint, bytes) = fuzz::sample_meta(&mut Gen::new(seed));
        prop_assert_eq!(fuzz::decode_meta_slot(&bytes), Some(checkpoint));
        prop_assert_eq!(fuzz::decode_meta_slot(&fuzz::encode_meta_slot(&checkpoint)), Some(checkpoint));
        let mut damaged = bytes;
        damaged[at] ^= 1 << bit;
        prop_assert_eq!(fuzz::decode_meta_slot(&damaged), None);
    }

    #[test]
    fn bufrefs_round_trip_and_refuse_a_flip(seed in any::<u64>(), at in 0..76usize, bit in 0..8u8) {
        let (words, _, len, bytes) = fuzz::sample_bufref(&mut Gen::new(seed));
        let decoded = shoal::BufRef::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded.encode()[..], &bytes[..]);
        prop_assert_eq!((decoded.generation(), decoded.version(), decoded.file_offset(), decoded.len()),
                        (words[2], words[3], words[6], len as usize));
        let mut damaged = bytes;
        damaged[at] ^= 1 << bit;
        prop_assert!(shoal::BufRef::decode(&damaged).is_err());
    }

    #[test]
    fn arena_headers_round_trip_and_refuse_a_flip(generation in any::<u64>(), reserve in any::<u64>(), at in 0..44usize, bit in 0..8u8) {
        let bytes = fuzz::arena_header_bytes(generation, reserve);
        prop_assert_eq!(fuzz::check_arena_header(&bytes, generation), Ok(reserve));
        prop_assert!(fuzz::check_arena_header(&bytes, generation ^ 1).is_err());
        let mut damaged = bytes;
        damaged[at] ^= 1 << bit;
        prop_assert!(fuzz::check_arena_header(&damaged, generation).is_err());
    }

    #[test]
    fn control_words_round_trip(seed in any::<u64>()) {
        let (published, boot, writer, highest, bytes) = fuzz::sample_control(&mut Gen::new(seed));
        let trusted = fuzz::decode_control(&bytes, boot).unwrap();
        prop_assert_eq!((trusted.current, trusted.writer, trusted.highest_generation), (Some(published), writer, highest));
        // Another boot's reader sees the word but does not trust it.
        let other = fuzz::decode_control(&bytes, [boot[0] ^ 1, boot[1]]).unwrap();
        prop_assert_eq!((other.current, other.current_untrusted, other.highest_generation), (None, Some(published), 0));
        prop_assert_eq!(fuzz::decode_control(&bytes[..4095], boot), None);
    }

    #[test]
    fn reader_tables_round_trip(seed in any::<u64>(), huge in any::<bool>()) {
        let (slots, used, mut bytes) = fuzz::sample_reader_table(&mut Gen::new(seed));
        prop_assert_eq!(fuzz::decode_reader_table(&bytes), Some(used.clone()));
        // A slot count larger than the file reads the slots the file holds.
        let declared: u64 = if huge { 1 << 20 } else { slots + 1 };
        bytes[8..16].copy_from_slice(&declared.to_le_bytes());
        prop_assert_eq!(fuzz::decode_reader_table(&bytes), Some(used));
        bytes[8..16].copy_from_slice(&((1u64 << 20) + 1).to_le_bytes());
        prop_assert_eq!(fuzz::decode_reader_table(&bytes), None);
    }

    #[test]
    fn settings_round_trip(seed in any::<u64>()) {
        let (options, text) = fuzz::sample_settings(&mut Gen::new(seed));
        let parsed = fuzz::parse_settings(&text).unwrap();
        prop_assert_eq!(fuzz::settings_text(&parsed), text);
        prop_assert_eq!(parsed.retain_tiers, options.retain_tiers);
    }

    #[test]
    fn paths_validate_the_same_both_ways(seed in any::<u64>()) {
        let path = fuzz::sample_path(&mut Gen::new(seed));
        let valid = shoal::path::validate(&path).is_ok();
        prop_assert_eq!(shoal::path::key(&path).is_ok(), valid);
        prop_assert_eq!(shoal::path::with_valid_key(&path, |k| k.to_vec()).ok(), shoal::path::key(&path).ok());
        if valid {
            prop_assert_eq!(shoal::path::path_of(&shoal::path::key(&path).unwrap()), path);
        }
    }
}

/// Inputs of every shape stay below the runner's budget per parse even in
/// a debug build (the runner's figures are for a release build).
#[test]
fn the_largest_samples_parse_quickly() {
    for target in Target::ALL {
        let mut slowest = std::time::Duration::ZERO;
        for seed in 0..200 {
            let input = target.input(&mut Gen::new(seed));
            let start = std::time::Instant::now();
            target.run(&input);
            slowest = slowest.max(start.elapsed());
        }
        assert!(slowest < std::time::Duration::from_secs(2), "{}: {slowest:?}", target.name());
    }
}
