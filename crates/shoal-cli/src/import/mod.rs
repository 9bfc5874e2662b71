//! `shoal import`: a JSON tree or JSON lines (see [`crate::json_shape`]),
//! streamed into the store in batches.
//!
//! Nothing holds the whole input: JSON lines are read a line at a time,
//! a JSON tree is parsed incrementally, and entries wait in one batch of at
//! most `--batch-bytes` before [`shoal::Store::bulk_load`] makes it a
//! version. An input that fits in one batch is one version, as before
//! streaming; a larger one is one version per batch, and an error midway
//! leaves the batches before it committed (the message says which).

mod batch;
mod input;
mod lines;
mod tree;
mod values;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::args::ImportFormat;
use shoal::Reader;

use crate::writer::Writer;
use crate::{bail, say, CliResult};

use batch::{Committed, Loader};
use input::Sniffed;

/// Most bytes of a path or key quoted in a message.
const QUOTED_MAX_BYTES: usize = 120;

/// serde_json's message without its " at line L column C", which the
/// callers place themselves (with the entry number, or offset lines).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

/// `text` for a message: whole if short, else its start and its length.
pub fn quoted(text: &str) -> String {
    if text.len() <= QUOTED_MAX_BYTES {
        return format!("{text:?}");
    }
    let mut end = QUOTED_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &text[..end], text.len())
}

/// The versions some batches became: "version 4" or "versions 4..=9".
fn versions_text(committed: &[Committed]) -> String {
    match (committed.first(), committed.last()) {
        (Some(a), Some(b)) if a.version == b.version => format!("version {}", a.version),
        (Some(a), Some(b)) => format!("versions {}..={}", a.version, b.version),
        _ => "no version".into(),
    }
}

/// What an import that failed midway did commit.
fn committed_text(committed: &[Committed]) -> String {
    match committed.last() {
        None => "nothing was imported".into(),
        Some(last) => format!(
            "already committed: {} ({} batches, entries 1..={}); the entries after entry {} were not written",
            versions_text(committed),
            committed.len(),
            last.entries.end(),
            last.entries.end()
        ),
    }
}

pub fn import(
    dir: &Path,
    input: &Path,
    format: ImportFormat,
    prefix: &str,
    batch_bytes: u64,
    wait: Duration,
) -> CliResult {
    shoal::path::validate(prefix)?;
    let start = Instant::now();
    let input = input::open(input)?;
    let mut writer = Writer::open(dir, wait)?;
    // What the summary reports, read in place (the same with or without
    // shoald holding the writer).
    let store_reader = Reader::open(dir)?;
    let max_value_bytes = store_reader.settings()?.max_value_bytes;
    let (sniffed, mut reader) = match format {
        ImportFormat::Auto => {
            input::sniff(input.reader, batch_bytes).map_err(|e| format!("reading {}: {e}", input.name))?
        }
        ImportFormat::Lines => (Sniffed::Lines, input.reader),
        ImportFormat::Tree => (Sniffed::Tree, input.reader),
    };
    let is_lines = sniffed == Sniffed::Lines;
    let bar = input.progress.clone();
    let on_commit = Box::new(move |n: u64| bar.set_message(format!("committing {n} entries")));
    let mut loader = Loader::new(&mut writer, batch_bytes, max_value_bytes, on_commit);
    let parsed = if is_lines {
        lines::load(&mut *reader, prefix, &mut loader, batch_bytes)
    } else {
        tree::load(reader, prefix, &mut loader, batch_bytes).map_err(|e| match sniffed {
            Sniffed::TreeForItsLongFirstLine(window) => format!(
                "{e} (the input was read as a JSON tree: its first line is longer than {window} bytes and does \
                 not start as one of JSON lines, {{\"path\": \"...\", ...; for JSON lines give --format lines)"
            ),
            _ => e,
        })
    };
    let count = loader.entries();
    let outcome = match parsed {
        Ok(()) => loader.finish(),
        Err(e) => Err((e, loader.committed().to_vec())),
    };
    input.progress.finish_and_clear();
    let committed = match outcome {
        Ok(committed) => committed,
        Err((message, committed)) => bail!("{message}; {}", committed_text(&committed)),
    };
    let what = if is_lines { "JSON lines" } else { "JSON tree" };
    if committed.is_empty() {
        say!("nothing to import: the input holds no nodes (version {} unchanged)", store_reader.snapshot()?.version());
        return Ok(());
    }
    let batches = if committed.len() == 1 {
        String::new()
    } else {
        format!(" ({} batches of at most {batch_bytes} bytes)", committed.len())
    };
    say!(
        "loaded {count} entries ({what}) as {}{batches} in {:.3} s; the store now holds {} nodes",
        versions_text(&committed),
        start.elapsed().as_secs_f64(),
        store_reader.snapshot()?.key_count(),
    );
    Ok(())
}
