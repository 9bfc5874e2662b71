//! A JSON tree, parsed incrementally: each node is handed to the loader as
//! soon as it is read, and only the path to it is kept, so memory follows
//! the batch and the depth, never the size of the input.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::batch::Loader;
use super::values::{float_text, Base64, Scalar};
use super::{quoted, without_position};
use crate::json_shape::{VALUE_B64_KEY, VALUE_KEY};

/// Read-ahead between the input and the parser.
const PARSE_BUFFER_BYTES: usize = 64 << 10;

/// Loads the JSON tree in `reader` as nodes under `prefix`. At most
/// `gap_limit` bytes (and the read-ahead) may be read between one entry or
/// key and the next: serde_json holds a string (or a long number) whole
/// while it reads it, so this bounds its memory as the batch bounds the
/// loader's.
pub fn load(reader: Box<dyn BufRead>, prefix: &str, loader: &mut Loader, gap_limit: u64) -> Result<(), String> {
    let meter = Rc::new(GapMeter { read: Cell::new(0), mark: Cell::new(0), limit: gap_limit });
    // serde_json reads a byte at a time; from a BufReader it takes them
    // from the buffer without a call each. The meter then counts what was
    // buffered, at most a buffer ahead of the parse.
    let input = BufReader::with_capacity(PARSE_BUFFER_BYTES, Metered { inner: reader, meter: meter.clone() });
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut tree = Tree { loader, path: prefix.to_string(), meter: meter.clone() };
    let parsed = Node { tree: &mut tree, top: true }.deserialize(&mut de).and_then(|()| de.end());
    parsed.map_err(|e| {
        let entry = tree.loader.entries() + 1;
        if meter.overran() {
            return format!(
                "near byte {} (entry {entry}): more than --batch-bytes ({gap_limit} bytes) of input without a complete \
                 entry: a string, key or number this long cannot be imported",
                meter.read.get()
            );
        }
        match e.classify() {
            serde_json::error::Category::Io => format!("reading the input: {}", without_position(&e)),
            serde_json::error::Category::Data => {
                format!("line {}, column {} (entry {entry}): {}", e.line(), e.column(), without_position(&e))
            }
            _ => format!(
                "line {}, column {} (entry {entry}): invalid JSON: {}",
                e.line(),
                e.column(),
                without_position(&e)
            ),
        }
    })
}

/// Bytes read, and where the last entry or key ended.
struct GapMeter {
    read: Cell<u64>,
    mark: Cell<u64>,
    limit: u64,
}

impl GapMeter {
    fn reset(&self) {
        self.mark.set(self.read.get());
    }

    fn overran(&self) -> bool {
        self.read.get() - self.mark.get() > self.limit
    }
}

/// The input, refusing to go on once [`GapMeter::limit`] bytes have been
/// read since the last mark.
struct Metered {
    inner: Box<dyn BufRead>,
    meter: Rc<GapMeter>,
}

impl Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.overran() {
            return Err(io::Error::other("too many bytes without a complete entry"));
        }
        let n = self.inner.read(buf)?;
        self.meter.read.set(self.meter.read.get() + n as u64);
        Ok(n)
    }
}

/// The parse's state: where the loader is, and the path of the node being read.
struct Tree<'l, 's> {
    loader: &'l mut Loader<'s>,
    path: String,
    meter: Rc<GapMeter>,
}

impl Tree<'_, '_> {
    /// Adds the node at the current path.
    fn add<E: de::Error>(&mut self, value: &[u8]) -> Result<(), E> {
        self.loader.add(&self.path, value).map_err(E::custom)?;
        self.meter.reset();
        Ok(())
    }

    /// Descends to the child `name`; returns the length to truncate back to.
    fn push(&mut self, name: &str) -> usize {
        let len = self.path.len();
        if self.path != "/" {
            self.path.push('/');
        }
        self.path.push_str(name);
        len
    }
}

/// One node's JSON, at the tree's current path.
struct Node<'t, 'l, 's> {
    tree: &'t mut Tree<'l, 's>,
    /// The value at the import prefix, which must be an object; its own
    /// node is written only if it names its own value.
    top: bool,
}

impl Node<'_, '_, '_> {
    fn leaf<E: de::Error>(self, value: &[u8]) -> Result<(), E> {
        if self.top {
            return Err(E::custom("a JSON tree must be an object at the top"));
        }
        self.tree.add(value)
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(v.as_bytes())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(if v { b"true" } else { b"false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string().as_bytes())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string().as_bytes())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(float_text(v).as_bytes())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(b"")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            return Err(de::Error::custom("a JSON tree must be an object at the top"));
        }
        let tree = self.tree;
        tree.add(b"")?;
        for i in 0u64.. {
            let len = tree.push(&i.to_string());
            let more = seq.next_element_seed(Node { tree: &mut *tree, top: false })?;
            tree.path.truncate(len);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tree = self.tree;
        let (mut plain, mut encoded) = (false, false);
        while let Some(key) = map.next_key_seed(Key { tree: &mut *tree })? {
            let own: Cow<[u8]> = match key {
                KeyKind::Child(len) => {
                    map.next_value_seed(Node { tree: &mut *tree, top: false })?;
                    tree.path.truncate(len);
                    continue;
                }
                KeyKind::Value => {
                    plain = true;
                    map.next_value_seed(Scalar { what: &format!("the value of {}", tree.path) })?
                }
                KeyKind::ValueBase64 => {
                    encoded = true;
                    Cow::Owned(map.next_value_seed(Base64 { what: &format!("the base64 value of {}", tree.path) })?)
                }
            };
            if plain && encoded {
                return Err(de::Error::custom(format!(
                    "{}: give \"{VALUE_KEY}\" or \"{VALUE_B64_KEY}\", not both",
                    tree.path
                )));
            }
            if tree.path == "/" {
                if !own.is_empty() {
                    return Err(de::Error::custom(format!(
                        "the root node cannot hold a value ({VALUE_KEY} at the top)"
                    )));
                }
            } else {
                tree.add(&own)?;
            }
        }
        // A node without "@value" is written once its keys are all read
        // (its children before it: a batch is sorted anyway), so that each
        // node of the input is one entry.
        if !self.top && !plain && !encoded {
            tree.add(b"")?;
        }
        Ok(())
    }
}

/// What an object's key names.
enum KeyKind {
    /// A child, now appended to the path; the length to truncate back to.
    Child(usize),
    Value,
    ValueBase64,
}

/// An object's key: the node's own value, or a child (appended to the path).
struct Key<'t, 'l, 's> {
    tree: &'t mut Tree<'l, 's>,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_, '_> {
    type Value = KeyKind;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<KeyKind, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_, '_> {
    type Value = KeyKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<KeyKind, E> {
        self.tree.meter.reset();
        match name {
            VALUE_KEY => Ok(KeyKind::Value),
            VALUE_B64_KEY => Ok(KeyKind::ValueBase64),
            _ if name.is_empty() || name.contains('/') => Err(E::custom(format!(
                "invalid key {} under {}: a key is one path segment (not empty, no '/')",
                quoted(name),
                self.tree.path
            ))),
            _ => Ok(KeyKind::Child(self.tree.push(name))),
        }
    }
}
