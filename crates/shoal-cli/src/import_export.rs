//! `import` and `export`: JSON trees and JSON lines.
//!
//! JSON tree: nested objects are nodes, their keys the child names. A string
//! leaf is a value; numbers and booleans are written as their JSON text,
//! `null` as an empty value, an array as children named `0`, `1`, ... A node
//! that has both a value and children holds its own value under the key
//! `"@value"` (or `"@value_base64"` for bytes that are not UTF-8).
//!
//! JSON lines: one `{"path": "/a/b", "value": "..."}` per line (or
//! `"value_base64"` instead of `"value"`).
//!
//! `export --format tree` writes the same convention, so export then import
//! reproduces the subtree.

use std::collections::BTreeMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use shoal::{Reader, Store};

use crate::commands::{no_node, read_input, snapshot};
use crate::{bail, stdout_error, CliResult, ExportFormat, Failure, ImportFormat};

/// Key holding a node's own value in the tree format.
const VALUE_KEY: &str = "@value";
/// The same, base64-encoded, for values that are not UTF-8.
const VALUE_B64_KEY: &str = "@value_base64";
/// Inputs with fewer entries than this get no progress bar.
const PROGRESS_MIN_ENTRIES: u64 = 10_000;

type Entries = Vec<(String, Vec<u8>)>;

/// A progress bar on stderr, hidden when stderr is not a terminal or the job is small.
fn progress(len: u64, message: &'static str) -> ProgressBar {
    if len < PROGRESS_MIN_ENTRIES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {msg:<10} [{bar:40}] {human_pos}/{human_len} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The bytes of a scalar JSON leaf.
fn scalar_bytes(v: &Value, at: &str) -> CliResult<Vec<u8>> {
    Ok(match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Number(n) => n.to_string().into_bytes(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Null => Vec::new(),
        Value::Array(_) | Value::Object(_) => bail!("the value of {at} must be a string, number, boolean or null"),
    })
}

fn base64_bytes(v: &Value, at: &str) -> CliResult<Vec<u8>> {
    match v.as_str().and_then(base64::decode) {
        Some(bytes) => Ok(bytes),
        None => bail!("the base64 value of {at} is not a valid base64 string"),
    }
}

/// Whether the input looks like JSON lines: its first line alone is an
/// object with a "path" string.
fn looks_like_lines(data: &[u8]) -> bool {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    let rest = &data[start..];
    if rest.first() != Some(&b'{') {
        return false;
    }
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    matches!(serde_json::from_slice::<Value>(line), Ok(Value::Object(m)) if m.get("path").is_some_and(Value::is_string))
}

fn parse_lines(data: &[u8], prefix: &str) -> CliResult<Entries> {
    let total = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let bar = progress(total, "parsing");
    let mut entries = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        bar.inc(1);
        let n = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => bail!("line {n}: expected a JSON object"),
            Err(e) => {
                let text = e.to_string();
                let text = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
                bail!("line {n}, column {}: invalid JSON: {text}", e.column())
            }
        };
        let Some(path) = obj.get("path").and_then(Value::as_str) else {
            bail!("line {n}: missing \"path\" string");
        };
        if !path.starts_with('/') {
            bail!("line {n}: invalid path {path:?}: must start with '/'");
        }
        let full = if prefix == "/" {
            path.to_string()
        } else if path == "/" {
            prefix.to_string()
        } else {
            format!("{prefix}{path}")
        };
        let value = match (obj.get("value"), obj.get("value_base64")) {
            (Some(_), Some(_)) => bail!("line {n}: give \"value\" or \"value_base64\", not both"),
            (Some(v), None) => scalar_bytes(v, &full).map_err(|e| line_error(n, e))?,
            (None, Some(v)) => base64_bytes(v, &full).map_err(|e| line_error(n, e))?,
            (None, None) => Vec::new(),
        };
        entries.push((full, value));
    }
    bar.finish_and_clear();
    Ok(entries)
}

fn line_error(n: usize, e: Failure) -> Failure {
    match e {
        Failure::Message(m) => Failure::Message(format!("line {n}: {m}")),
        other => other,
    }
}

/// Appends the nodes of a JSON tree placed at `path`. `top`: the object at
/// the import prefix, whose node is written only if it names its own value.
fn flatten(value: &Value, path: &str, top: bool, out: &mut Entries) -> CliResult {
    match value {
        Value::Object(map) => {
            let own = match (map.get(VALUE_KEY), map.get(VALUE_B64_KEY)) {
                (Some(_), Some(_)) => bail!("{path}: give \"{VALUE_KEY}\" or \"{VALUE_B64_KEY}\", not both"),
                (Some(v), None) => Some(scalar_bytes(v, path)?),
                (None, Some(v)) => Some(base64_bytes(v, path)?),
                (None, None) => None,
            };
            match own {
                Some(v) if path == "/" && !v.is_empty() => {
                    bail!("the root node cannot hold a value ({VALUE_KEY} at the top)")
                }
                Some(v) if path != "/" => out.push((path.to_string(), v)),
                None if !top => out.push((path.to_string(), Vec::new())),
                _ => {}
            }
            for (name, child) in map {
                if name == VALUE_KEY || name == VALUE_B64_KEY {
                    continue;
                }
                if name.is_empty() || name.contains('/') {
                    bail!("invalid key {name:?} under {path}: a key is one path segment (not empty, no '/')");
                }
                flatten(child, &child_path(path, name), false, out)?;
            }
        }
        Value::Array(items) => {
            if top {
                bail!("a JSON tree must be an object at the top");
            }
            out.push((path.to_string(), Vec::new()));
            for (i, child) in items.iter().enumerate() {
                flatten(child, &child_path(path, &i.to_string()), false, out)?;
            }
        }
        scalar => {
            if top {
                bail!("a JSON tree must be an object at the top");
            }
            out.push((path.to_string(), scalar_bytes(scalar, path)?));
        }
    }
    Ok(())
}

fn parse_tree(data: &[u8], prefix: &str) -> CliResult<Entries> {
    let spinner = if data.len() > 4 << 20 && std::io::stderr().is_terminal() {
        let s = ProgressBar::new_spinner();
        s.set_message("parsing JSON");
        s.enable_steady_tick(Duration::from_millis(100));
        s
    } else {
        ProgressBar::hidden()
    };
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
    spinner.finish_and_clear();
    let mut entries = Vec::new();
    flatten(&value, prefix, true, &mut entries)?;
    Ok(entries)
}

pub fn import(dir: &Path, input: &Path, format: ImportFormat, prefix: &str) -> CliResult {
    shoal::path::validate(prefix)?;
    let start = Instant::now();
    // Open first: fail fast when the store is missing or locked.
    let store = Store::open_existing(dir)?;
    let data = read_input(input)?;
    let lines = match format {
        ImportFormat::Auto => looks_like_lines(&data),
        ImportFormat::Lines => true,
        ImportFormat::Tree => false,
    };
    let entries = if lines { parse_lines(&data, prefix)? } else { parse_tree(&data, prefix)? };
    drop(data);
    if entries.is_empty() {
        println!("nothing to import: the input holds no nodes (version {} unchanged)", store.version());
        return Ok(());
    }
    let count = entries.len();
    let bar = progress(count as u64, "indexing");
    let items = entries.iter().enumerate().map(|(i, (p, v))| {
        bar.inc(1);
        if i + 1 == count {
            bar.set_message("committing");
        }
        (p.as_str(), v.as_slice())
    });
    let version = store.bulk_load(items)?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loaded {count} entries ({}) as version {version} in {secs:.3} s; the store now holds {} nodes",
        if lines { "JSON lines" } else { "JSON tree" },
        store.snapshot().key_count(),
    );
    Ok(())
}

/// One node of an exported tree.
#[derive(Default)]
struct TreeNode<'a> {
    value: &'a [u8],
    children: BTreeMap<String, TreeNode<'a>>,
}

impl TreeNode<'_> {
    fn into_json(self, path: &str, top: bool) -> CliResult<Value> {
        if self.children.is_empty() && !top {
            return Ok(match std::str::from_utf8(self.value) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => {
                    let mut m = Map::new();
                    m.insert(VALUE_B64_KEY.to_string(), Value::String(base64::encode(self.value)));
                    Value::Object(m)
                }
            });
        }
        let mut m = Map::new();
        if !self.value.is_empty() {
            match std::str::from_utf8(self.value) {
                Ok(s) => m.insert(VALUE_KEY.to_string(), Value::String(s.to_string())),
                Err(_) => m.insert(VALUE_B64_KEY.to_string(), Value::String(base64::encode(self.value))),
            };
        }
        for (name, child) in self.children {
            let at = child_path(path, &name);
            if name == VALUE_KEY || name == VALUE_B64_KEY {
                bail!("{at}: the tree format cannot hold a node named {name}; use --format lines");
            }
            let v = child.into_json(&at, false)?;
            m.insert(name, v);
        }
        Ok(Value::Object(m))
    }
}

fn json_error(e: serde_json::Error) -> Failure {
    match e.io_error_kind() {
        Some(std::io::ErrorKind::BrokenPipe) => Failure::BrokenPipe,
        _ => Failure::Message(format!("writing to stdout: {e}")),
    }
}

pub fn export(dir: &Path, path: &str, format: ExportFormat, at: Option<u64>) -> CliResult {
    shoal::path::validate(path)?;
    let reader = Reader::open(dir)?;
    let snap = snapshot(&reader, at)?;
    if !snap.exists(path)? {
        return Err(no_node(path));
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    match format {
        ExportFormat::Lines => {
            for item in snap.scan(path)? {
                let entry = item?;
                let (p, v) = (entry.path(), entry.value());
                let mut m = Map::new();
                m.insert("path".to_string(), Value::String(p));
                match std::str::from_utf8(v) {
                    Ok(s) => m.insert("value".to_string(), Value::String(s.to_string())),
                    Err(_) => m.insert("value_base64".to_string(), Value::String(base64::encode(v))),
                };
                serde_json::to_writer(&mut out, &Value::Object(m)).map_err(json_error)?;
                out.write_all(b"\n").map_err(stdout_error)?;
            }
        }
        ExportFormat::Tree => {
            let mut root = TreeNode::default();
            let base_len = if path == "/" { 0 } else { path.len() };
            for item in snap.scan(path)? {
                let entry = item?;
                let (p, v) = (entry.path(), entry.value());
                let rel = &p[base_len..];
                let mut node = &mut root;
                for segment in rel.split('/').filter(|s| !s.is_empty()) {
                    node = node.children.entry(segment.to_string()).or_default();
                }
                node.value = v;
            }
            let json = root.into_json(path, true)?;
            serde_json::to_writer_pretty(&mut out, &json).map_err(json_error)?;
            out.write_all(b"\n").map_err(stdout_error)?;
        }
    }
    out.flush().map_err(stdout_error)
}

/// Standard base64 (RFC 4648, with padding).
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let chunks = bytes.len() / 4;
        let mut out = Vec::with_capacity(chunks * 3);
        for (ci, chunk) in bytes.chunks(4).enumerate() {
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && ci + 1 != chunks) {
                return None;
            }
            let mut n = 0u32;
            for &c in &chunk[..4 - pad] {
                n = n << 6 | sextet(c)?;
            }
            n <<= 6 * pad;
            out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc4648_vectors() {
            let cases = [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ];
            for (plain, coded) in cases {
                assert_eq!(encode(plain.as_bytes()), coded);
                assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()));
            }
        }

        #[test]
        fn round_trips_all_bytes_and_rejects_garbage() {
            let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
            for len in 0..data.len() {
                assert_eq!(decode(&encode(&data[..len])).as_deref(), Some(&data[..len]));
            }
            for bad in ["Zg=", "Z===", "Zg==Zg==", "Z!==", "A=B="] {
                assert_eq!(decode(bad), None, "{bad:?}");
            }
        }
    }
}
