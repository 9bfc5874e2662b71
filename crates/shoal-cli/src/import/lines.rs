//! JSON lines, read one line at a time: `{"path": "/a/b", "value": "..."}`
//! (or `"value_base64"`); blank lines are skipped, and any other key is an
//! error (a misspelled `"vaule"` would otherwise write an empty value).

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, Read};

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use super::batch::Loader;
use super::values::{Base64, Scalar};
use super::{quoted, without_position};

/// Loads every line of `reader`; a line may be at most `line_limit` bytes
/// (its newline aside). Returns the error with its line number.
pub fn load(reader: &mut dyn BufRead, prefix: &str, loader: &mut Loader, line_limit: u64) -> Result<(), String> {
    let mut line = Vec::new();
    let mut full = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = (&mut *reader)
            .take(line_limit + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading line {}: {e}", n + 1))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() as u64 > line_limit {
            return Err(format!("line {n} is longer than --batch-bytes ({line_limit} bytes)"));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = parse(&line).map_err(|e| format!("line {n}{e}"))?;
        let Some(path) = entry.path else {
            return Err(format!("line {n}: missing \"path\" string"));
        };
        if !path.starts_with('/') {
            return Err(format!("line {n}: invalid path {}: must start with '/'", quoted(&path)));
        }
        full.clear();
        if prefix == "/" {
            full.push_str(&path);
        } else {
            full.push_str(prefix);
            if path != "/" {
                full.push_str(&path);
            }
        }
        let value = match (entry.value, entry.value_base64) {
            (Some(_), Some(_)) => return Err(format!("line {n}: give \"value\" or \"value_base64\", not both")),
            (Some(v), None) => v,
            (None, Some(v)) => Cow::Owned(v),
            (None, None) => Cow::Borrowed(&b""[..]),
        };
        loader.add(&full, &value).map_err(|e| format!("line {n}: {e}"))?;
    }
}

/// One line's fields, borrowed from the line where no escape was decoded.
#[derive(Default)]
struct Line<'a> {
    path: Option<Cow<'a, str>>,
    value: Option<Cow<'a, [u8]>>,
    value_base64: Option<Vec<u8>>,
}

/// Parses a line; the error starts with its position (", column 7: ..."
/// or ": ...") to follow "line N".
fn parse(line: &[u8]) -> Result<Line<'_>, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let parsed = LineVisitor.deserialize(&mut de).and_then(|entry| de.end().map(|()| entry));
    parsed.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!(": {}", without_position(&e)),
        _ => format!(", column {}: invalid JSON: {}", e.column(), without_position(&e)),
    })
}

struct LineVisitor;

impl<'de> DeserializeSeed<'de> for LineVisitor {
    type Value = Line<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut line = Line::default();
        // A repeated key keeps its last value, as a JSON object read whole would.
        while let Some(key) = map.next_key_seed(Text { what: "a key" })? {
            match &*key {
                "path" => line.path = Some(map.next_value_seed(Text { what: "\"path\" to be a string" })?),
                "value" => line.value = Some(map.next_value_seed(Scalar { what: "\"value\"" })?),
                "value_base64" => line.value_base64 = Some(map.next_value_seed(Base64 { what: "\"value_base64\"" })?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key {other:?} (a line holds \"path\" and \"value\" or \"value_base64\")"
                    )))
                }
            }
        }
        Ok(line)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom("expected a JSON object"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom("expected a JSON object"))
    }
}

/// A string, borrowed from the line when it holds no escape.
struct Text {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}
