//! Helpers shared by the bulk-load tests.

use std::collections::BTreeMap;

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
