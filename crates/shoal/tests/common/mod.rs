//! Helpers shared by test binaries: models of a store's tree, and the
//! durable store the failure tests open.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;

use shoal::{Durability, Options, Store};

/// A durable store, compacted and tidied only when a test asks.
pub fn sync_options() -> Options {
    Options {
        create: true,
        durability: Durability::Sync,
        auto_compact: false,
        tidy_when_idle: None,
        ..Options::default()
    }
}

/// Puts one value in a transaction of its own.
pub fn put(store: &Store, path: &str, value: &str) -> shoal::Result<u64> {
    let mut txn = store.begin();
    txn.put(path, value)?;
    txn.commit()
}

/// What a bulk load of `items` must make: the last value of each path, and
/// each missing ancestor with an empty value.
pub fn load_model(items: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (p, v) in items {
        m.insert(p.clone(), v.clone());
    }
    for p in m.keys().cloned().collect::<Vec<_>>() {
        let mut at = p.as_str();
        while let Some(cut) = at.rfind('/').filter(|&c| c > 0) {
            at = &at[..cut];
            m.entry(at.to_string()).or_default();
        }
    }
    m
}

/// Writes `value` at `path` in a model of a tree, with each missing
/// ancestor made with an empty value, as a store's put does.
pub fn model_put(m: &mut BTreeMap<String, Vec<u8>>, path: &str, value: &[u8]) {
    let mut at = 0;
    while let Some(p) = path[at + 1..].find('/') {
        at += 1 + p;
        m.entry(path[..at].to_string()).or_default();
    }
    m.insert(path.to_string(), value.to_vec());
}
