//! A store's settings (see [`crate::options`]), kept in the text file
//! `settings` (`name = value` lines): written when the store is created or
//! its settings replaced, atomically (temporary file, rename, directory
//! sync), and read by every writer open.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::options::{Durability, Options};
use crate::retention;

pub const FILE_NAME: &str = "settings";

pub fn save(dir: &StoreDir, o: &Options) -> Result<()> {
    let text = render(o);
    let tmp = "settings.tmp";
    dir.remove(tmp)?;
    let mut file = dir.open_file(tmp, Open::CreateNew(FileKind::Data))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).at(&dir.join(tmp))?;
    dir.rename(tmp, FILE_NAME)?;
    dir.sync()
}

/// The text [`save`] writes for `o`.
pub(crate) fn render(o: &Options) -> String {
    let durability = match o.durability {
        Durability::None => "none",
        Durability::Sync => "sync",
    };
    format!(
        "# shoal store settings: written at creation, replaced only when asked\n\
         durability = {durability}\n\
         retain_versions = {}\n\
         retain_tiers = {}\n\
         max_value_bytes = {}\n\
         map_reserve_bytes = {}\n\
         checkpoint_journal_bytes = {}\n\
         auto_compact = {}\n\
         compact_min_bytes = {}\n\
         compact_factor = {}\n",
        o.retain_versions,
        o.retain_tiers
            .iter()
            .map(|t| format!("{}:{}", retention::format_duration(t.every), retention::format_duration(t.within)))
            .collect::<Vec<_>>()
            .join(", "),
        o.max_value_bytes,
        o.map_reserve_bytes,
        o.checkpoint_journal_bytes,
        o.auto_compact,
        o.compact_min_bytes,
        o.compact_factor,
    )
}

/// The recorded settings (as options with the per-open fields at their
/// defaults); `None` for a store that has none.
pub fn load(dir: &StoreDir) -> Result<Option<Options>> {
    let path = dir.join(FILE_NAME);
    if !dir.exists(FILE_NAME)? {
        return Ok(None);
    }
    let mut text = String::new();
    dir.open_file(FILE_NAME, Open::Read)?.read_to_string(&mut text).at(&path)?;
    parse(&path, &text).map(Some)
}

/// The options a settings file's text records: the parser of [`load`],
/// without the file (`path` names it in errors).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Options> {
    let mut o = Options::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |detail: String| Error::Corrupt { file: path.to_path_buf(), offset: n as u64 + 1, detail };
        let (name, value) =
            line.split_once('=').ok_or_else(|| bad(format!("line {}: expected name = value", n + 1)))?;
        let (name, value) = (name.trim(), value.trim());
        let number = || value.parse::<u64>().map_err(|_| bad(format!("{name}: {value:?} is not a number")));
        match name {
            "durability" => {
                o.durability = match value {
                    "none" => Durability::None,
                    "sync" => Durability::Sync,
                    _ => return Err(bad(format!("durability: {value:?} is neither none nor sync"))),
                }
            }
            "retain_versions" => {
                o.retain_versions = u32::try_from(number()?).map_err(|_| bad("retain_versions too large".into()))?
            }
            "retain_tiers" => {
                o.retain_tiers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| retention::parse_tier(t).map_err(|e| bad(format!("retain_tiers: {e}"))))
                    .collect::<Result<_>>()?
            }
            "max_value_bytes" => o.max_value_bytes = number()? as usize,
            "map_reserve_bytes" => o.map_reserve_bytes = number()?,
            "checkpoint_journal_bytes" => o.checkpoint_journal_bytes = number()?,
            "auto_compact" => {
                o.auto_compact =
                    value.parse().map_err(|_| bad(format!("auto_compact: {value:?} is not true or false")))?
            }
            "compact_min_bytes" => o.compact_min_bytes = number()?,
            "compact_factor" => o.compact_factor = number()?,
            // Settings from a newer version are ignored rather than refused.
            _ => tracing::warn!(file = %path.display(), name, "unknown setting ignored"),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(tmp.path()).unwrap();
        let tiers = vec![
            retention::RetainTier::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(3600)),
            retention::RetainTier::new(std::time::Duration::from_millis(1500), std::time::Duration::from_secs(90)),
        ];
        let o = Options {
            durability: Durability::None,
            retain_versions: 3,
            retain_tiers: tiers.clone(),
            max_value_bytes: 99,
            ..Options::default()
        };
        save(&dir, &o).unwrap();
        let back = load(&dir).unwrap().unwrap();
        assert_eq!(back.durability, Durability::None);
        assert_eq!(back.retain_tiers, tiers);
        save(&dir, &Options::default()).unwrap();
        assert!(load(&dir).unwrap().unwrap().retain_tiers.is_empty());
        std::fs::write(tmp.path().join(FILE_NAME), "retain_tiers = 1m:1w\n").unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("retain_tiers") && err.contains("unknown unit"), "{err}");
        save(&dir, &o).unwrap();
        let back = load(&dir).unwrap().unwrap();
        assert_eq!((back.retain_versions, back.max_value_bytes, back.create), (3, 99, false));
        std::fs::remove_file(tmp.path().join(FILE_NAME)).unwrap();
        assert!(load(&dir).unwrap().is_none());
        std::fs::write(tmp.path().join(FILE_NAME), "durability = maybe\n").unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("neither none nor sync"), "{err}");
    }
}
