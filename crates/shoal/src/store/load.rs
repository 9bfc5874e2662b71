//! Bulk loads gathered into flat buffers and sorted there: one allocation
//! per buffer instead of two per value, and a sort that compares eight
//! bytes of each key (past the prefix every key shares) before any
//! `memcmp`. Into an empty tree a load is written bottom-up, leaves in key
//! order straight from the buffers; otherwise it becomes ordinary batch
//! ops (`batch.rs`).

use std::cmp::Ordering;
use std::ops::Range;

use crate::build::{self, NodeSink};
use crate::error::{Error, Result};
use crate::journal::JournalOp;
use crate::node::{self, EntryRef, Key, ValueRepr};
use crate::path;

/// A bulk load's paths (as keys, back to back in one buffer) and values
/// (borrowed from the caller's items), sorted by key, the last of equal
/// keys kept.
pub(super) struct Load<'v> {
    keys: Vec<u8>,
    items: Vec<Item<'v>>,
}

#[derive(Clone)]
struct Item<'v> {
    key: Range<usize>,
    value: &'v [u8],
}

impl<'v> Load<'v> {
    /// Gathers `items`, each path validated and each value passed to
    /// `check_value` (its size limit).
    pub(super) fn gather(
        items: impl ExactSizeIterator<Item = (&'v str, &'v [u8])>,
        check_value: impl Fn(&str, &[u8]) -> Result<()>,
    ) -> Result<Load<'v>> {
        let mut gathered = Vec::with_capacity(items.len());
        let mut keys = Vec::new();
        for (p, value) in items {
            let body = path::validate(p)?;
            if body.is_empty() {
                return Err(Error::RootImmutable);
            }
            check_value(p, value)?;
            let key = keys.len()..keys.len() + body.len();
            keys.extend(body.iter().map(|&b| if b == b'/' { 0 } else { b }));
            gathered.push(Item { key, value });
        }
        let mut load = Load { keys, items: gathered };
        load.sort();
        Ok(load)
    }

    /// Sorts by key, keeping the last of equal keys.
    fn sort(&mut self) {
        let keys = &self.keys;
        let first = self.items.first().map_or(&[][..], |i| &keys[i.key.clone()]);
        let shared = self.items.iter().map(|i| common_prefix(first, &keys[i.key.clone()])).min().unwrap_or(0);
        // (hint, index): the hint orders most pairs; equal hints compare the
        // keys, then the order given (for the last of equal keys to win).
        let mut order: Vec<(u64, u32)> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| (node::hint_of(&keys[item.key.start + shared..item.key.end]), i as u32))
            .collect();
        let key = |i: u32| &keys[self.items[i as usize].key.clone()];
        order.sort_unstable_by(|a, b| match a.0.cmp(&b.0) {
            Ordering::Equal => key(a.1).cmp(key(b.1)).then(a.1.cmp(&b.1)),
            other => other,
        });
        let mut sorted: Vec<Item<'v>> = Vec::with_capacity(order.len());
        for (_, i) in order {
            let item = self.items[i as usize].clone();
            match sorted.last_mut() {
                Some(last) if keys[last.key.clone()] == keys[item.key.clone()] => *last = item,
                _ => sorted.push(item),
            }
        }
        self.items = sorted;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Values loaded (after duplicates).
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// (key, value) in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.items.iter().map(|i| (&self.keys[i.key.clone()], i.value))
    }

    /// The journal ops of the load (its ancestors are the batch's to add).
    pub(super) fn journal_ops(&self) -> Vec<JournalOp> {
        self.iter().map(|(k, v)| JournalOp::Put { key: k.to_vec(), value: v.to_vec() }).collect()
    }

    /// Bytes of the load's journal record, as `commit_ops` counts them.
    pub(super) fn journal_bytes(&self) -> usize {
        self.iter().map(|(k, v)| 8 + k.len() + v.len()).sum()
    }

    /// Calls `each` with every key the load writes into an empty tree, in
    /// order: its own with their values, and before each the ancestors it
    /// lacks (`None`: an empty value), each once; until `each` returns false.
    pub(super) fn each_key<'a>(
        &'a self,
        mut each: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<bool>,
    ) -> Result<()> {
        // Lengths of the ancestors of the key met last, shallowest first,
        // and that key itself. In key order, everything between a node and
        // its descendant lies in the node's subtree: an ancestor met once
        // stays on the chain until the walk leaves its subtree.
        let mut chain: Vec<usize> = Vec::new();
        let mut last: &[u8] = &[];
        for (key, value) in self.iter() {
            let shared = common_prefix(last, key);
            let keep = chain.iter().take_while(|&&len| len <= shared && key.len() > len && key[len] == 0).count();
            chain.truncate(keep);
            let from = chain.last().map_or(0, |&len| len + 1);
            for at in from..key.len() {
                if key[at] == 0 {
                    if !each(&key[..at], None)? {
                        return Ok(());
                    }
                    chain.push(at);
                }
            }
            if !each(key, Some(value))? {
                return Ok(());
            }
            chain.push(key.len());
            last = key;
        }
        Ok(())
    }

    /// Writes the load into an empty tree: value blobs, then leaves in key
    /// order, then the levels above. Returns the root and the nodes below it.
    pub(super) fn write_tree(&self, sink: &dyn NodeSink) -> Result<(u64, u64)> {
        // Into an empty tree everything is created; the report is not read.
        let mut report = build::ApplyReport::default();
        let mut writer = build::SortedWriter::new(sink, &mut report);
        self.each_key(|key, value| {
            let value = match value {
                None => ValueRepr::Inline(&[]),
                Some(v) if v.len() <= node::INLINE_VALUE_MAX => ValueRepr::Inline(v),
                Some(v) => match build::store_value(sink, v)? {
                    build::StoredValue::Blob { offset, len } => ValueRepr::Blob { offset, len },
                    build::StoredValue::Inline(_) => unreachable!("values past the inline limit are stored as blobs"),
                },
            };
            writer.push(EntryRef { key: Key::whole(key), value, link: None })?;
            Ok(true)
        })?;
        writer.finish()
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load<'v>(items: &'v [(&'v str, &'v [u8])]) -> Load<'v> {
        Load::gather(items.iter().copied(), |_, _| Ok(())).unwrap()
    }

    #[test]
    fn sorted_by_key_with_the_last_of_equal_keys_kept() {
        let items: Vec<(&str, &[u8])> = vec![
            ("/b", b"1"),
            ("/a/x", b"2"),
            ("/b", b"3"),
            ("/a", b"4"),
            ("/a/x", b"5"),
            ("/a b", b"6"),
            ("/b", b"7"),
        ];
        let got: Vec<(Vec<u8>, Vec<u8>)> = load(&items).iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [(&b"a"[..], &b"4"[..]), (b"a\0x", b"5"), (b"a b", b"6"), (b"b", b"7")]
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn each_ancestor_a_load_lacks_comes_once_before_its_first_descendant() {
        // "ab" is not below "a", though "a" is a prefix of it; "a/b" is
        // loaded between its ancestor "a" and its own descendant.
        let items: Vec<(&str, &[u8])> =
            vec![("/b/x/y", b"1"), ("/ab/c", b"2"), ("/a", b"3"), ("/a/b/c", b"4"), ("/a/b", b"5"), ("/b/z", b"6")];
        let load = load(&items);
        let mut seen = Vec::new();
        load.each_key(|k, v| {
            seen.push((String::from_utf8(k.to_vec()).unwrap().replace('\0', "/"), v.map(|v| v.to_vec())));
            Ok(true)
        })
        .unwrap();
        let want: Vec<(String, Option<Vec<u8>>)> = [
            ("a", Some("3")),
            ("a/b", Some("5")),
            ("a/b/c", Some("4")),
            ("ab", None),
            ("ab/c", Some("2")),
            ("b", None),
            ("b/x", None),
            ("b/x/y", Some("1")),
            ("b/z", Some("6")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
        .collect();
        assert_eq!(seen, want);
        // Stopped when asked.
        let mut count = 0;
        load.each_key(|_, _| {
            count += 1;
            Ok(count < 3)
        })
        .unwrap();
        assert_eq!(count, 3);
    }

    #[test]
    fn paths_and_values_are_checked_as_gathered() {
        let refuse_long = |_: &str, v: &[u8]| if v.len() > 3 { Err(Error::RootImmutable) } else { Ok(()) };
        let bad: [(&str, &[u8]); 3] = [("/", b""), ("no-slash", b""), ("/a//b", b"")];
        for item in bad {
            assert!(Load::gather(std::iter::once(item), |_, _| Ok(())).is_err(), "{item:?}");
        }
        assert!(Load::gather(std::iter::once(("/a", &b"1234"[..])), refuse_long).is_err());
        assert!(Load::gather(std::iter::once(("/a", &b"123"[..])), refuse_long).is_ok());
    }
}
