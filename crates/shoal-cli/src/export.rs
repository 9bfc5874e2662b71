//! `shoal export`: a subtree as JSON lines or as one JSON tree (see
//! [`crate::json_shape`]).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value};
use shoal::Reader;

use crate::args::ExportFormat;
use crate::commands::{no_node, snapshot};
use crate::json_shape::{base64, child_path, VALUE_B64_KEY, VALUE_KEY};
use crate::{bail, stdout_error, CliResult, Failure};

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

/// Levels of nesting a JSON tree may have below the exported node:
/// serde_json (and so `shoal import`) refuses 128 or more.
const MAX_TREE_DEPTH: usize = 128;

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
                // JSON readers (`shoal import` among them) stop at 128 levels of nesting.
                if rel.split('/').filter(|s| !s.is_empty()).count() >= MAX_TREE_DEPTH {
                    bail!(
                        "{p} lies {MAX_TREE_DEPTH} or more levels below {path}, deeper than a JSON tree can be read \
                         back; use --format lines"
                    );
                }
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
