//! The options `shoal init` was given, kept beside the store.
//!
//! The library does not record a store's options (durability, retained
//! versions, value limit) in the store: every `Store::open` takes them anew.
//! So that `init --durability none --retain 4` keeps meaning something for
//! later `put`, `rm` and `import` runs, `init` writes them to a small JSON
//! file in the store directory, and every writing command opens the store
//! with them. A store without that file is opened with the library defaults.

use std::path::Path;

use serde_json::{json, Value};
use shoal::{Durability, Options, Store};

use crate::{bail, CliResult};

pub const FILE_NAME: &str = "shoal-cli.json";

pub fn save(dir: &Path, options: &Options) -> CliResult {
    let durability = match options.durability {
        Durability::None => "none",
        Durability::Sync => "sync",
    };
    let doc = json!({
        "durability": durability,
        "retain_versions": options.retain_versions,
        "max_value_bytes": options.max_value_bytes,
    });
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, format!("{doc:#}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// The options to open an existing store with.
pub fn load(dir: &Path) -> CliResult<Options> {
    let mut options = Options { create: false, ..Options::default() };
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(options),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match doc.get("durability").and_then(Value::as_str) {
        Some("none") => options.durability = Durability::None,
        Some("sync") | None => options.durability = Durability::Sync,
        Some(other) => bail!("{}: unknown durability {other:?}", path.display()),
    }
    if let Some(n) = doc.get("retain_versions").and_then(Value::as_u64) {
        options.retain_versions =
            u32::try_from(n).map_err(|_| format!("{}: retain_versions too large", path.display()))?;
    }
    if let Some(n) = doc.get("max_value_bytes").and_then(Value::as_u64) {
        options.max_value_bytes =
            usize::try_from(n).map_err(|_| format!("{}: max_value_bytes too large", path.display()))?;
    }
    Ok(options)
}

/// Opens an existing store as its writer, with the options `init` recorded.
pub fn open_writer(dir: &Path) -> CliResult<Store> {
    let options = load(dir)?;
    Ok(Store::open(dir, options)?)
}
