//! The input of an import: a file or stdin, read as a stream (never whole),
//! with a progress bar fed by the bytes read, and the format detection that
//! looks at the first line only.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Cursor, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::CliResult;

/// Read buffer size: large reads from the file, small next to a batch.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Inputs smaller than this get no progress bar: it would only flicker.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// An input opened for reading.
pub struct Input {
    pub reader: Box<dyn BufRead>,
    /// "stdin", or the file's path, for messages.
    pub name: String,
    pub progress: ProgressBar,
}

/// Opens `path` ("-": stdin) for streaming. The progress bar shows bytes
/// read out of the file's length, or a spinner with bytes read for stdin
/// (whose length is not known); hidden when stderr is not a terminal.
pub fn open(path: &Path) -> CliResult<Input> {
    let (raw, len, name): (Box<dyn Read>, Option<u64>, String) = if path.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None, "stdin".into())
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(file), len, path.display().to_string())
    };
    let progress = progress_bar(len);
    let counted = Counted { inner: raw, progress: progress.clone() };
    Ok(Input { reader: Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, counted)), name, progress })
}

fn progress_bar(len: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() || len.is_some_and(|n| n < PROGRESS_MIN_BYTES) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => {
            let bar = ProgressBar::new(n);
            let style = ProgressStyle::with_template(
                "{spinner} {msg:<10} [{bar:40}] {binary_bytes}/{binary_total_bytes} {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {msg:<10} {binary_bytes} read {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar
        }
    };
    bar.set_message("importing");
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Counts the bytes read from the source into the progress bar.
struct Counted<R> {
    inner: R,
    progress: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// How much of the first line the detection reads. A JSON line shows its
/// "path" well within it; a minified tree may be a single line as long as
/// the input, and what is read here is held until it is parsed.
const SNIFF_WINDOW_BYTES: u64 = 1 << 20;

/// What the first line says the input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// Its first non-blank line alone is an object with a "path" string, or
    /// starts as one when it is longer than the detection reads.
    Lines,
    Tree,
    /// A tree, because the first line is longer than the detection reads
    /// (this many bytes) and does not start as a JSON line.
    TreeForItsLongFirstLine(u64),
}

/// What the input looks like, and the input again from its start.
///
/// Reads no more than the first non-blank line, up to the smaller of
/// `line_limit` and [`SNIFF_WINDOW_BYTES`]. Leading whitespace is replayed
/// as its newlines only, which keeps every later line and column number as
/// in the input.
pub fn sniff(mut reader: Box<dyn BufRead>, line_limit: u64) -> io::Result<(Sniffed, Box<dyn BufRead>)> {
    let window = line_limit.min(SNIFF_WINDOW_BYTES);
    let mut newlines = 0u64;
    let mut first = Vec::new();
    let mut found = false;
    while !found && (first.len() as u64) <= window {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let mut used = 0;
        for &b in buf {
            if b == b'\n' {
                newlines += 1;
                first.clear();
            } else if b.is_ascii_whitespace() {
                first.push(b);
            } else {
                found = true;
                break;
            }
            used += 1;
        }
        reader.consume(used);
    }
    let mut complete = false;
    if found {
        let room = (window + 1).saturating_sub(first.len() as u64);
        let n = (&mut reader).take(room).read_until(b'\n', &mut first)?;
        complete = first.last() == Some(&b'\n') || (n as u64) < room;
    }
    // The byte read past the window only tells that the line goes on.
    let judged = if complete { &first[..] } else { &first[..first.len().min(window as usize)] };
    let path_is_string = Cell::new(false);
    let shape =
        ShapeSeed { path_is_string: &path_is_string }.deserialize(&mut serde_json::Deserializer::from_slice(judged));
    let sniffed = match (found, complete) {
        (false, _) => Sniffed::Tree,
        (true, true) if matches!(shape, Ok(Shape::ObjectWithPath)) => Sniffed::Lines,
        (true, true) => Sniffed::Tree,
        (true, false) if path_is_string.get() => Sniffed::Lines,
        (true, false) => Sniffed::TreeForItsLongFirstLine(window),
    };
    let blank_lines = BufReader::new(io::repeat(b'\n').take(newlines));
    Ok((sniffed, Box::new(blank_lines.chain(Cursor::new(first)).chain(reader))))
}

/// What matters of a JSON value to tell JSON lines from a tree.
enum Shape {
    String,
    ObjectWithPath,
    Other,
}

/// Reads a value's [`Shape`] without building it. `path_is_string` is set
/// as soon as the object's "path" member is read as a string, so that a
/// line cut short by the detection's window still tells.
struct ShapeSeed<'c> {
    path_is_string: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_> {
    type Value = Shape;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut has_path = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "path" {
                // A "path" inside the path's value says nothing about the line.
                let inner = Cell::new(false);
                has_path = matches!(map.next_value_seed(ShapeSeed { path_is_string: &inner })?, Shape::String);
                self.path_is_string.set(has_path);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(if has_path { Shape::ObjectWithPath } else { Shape::Other })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Shape, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Shape::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::String)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}
