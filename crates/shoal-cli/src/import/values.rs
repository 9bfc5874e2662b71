//! JSON leaves as value bytes, visited in place (no `serde_json::Value`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

use crate::json_shape::base64;

/// The text serde_json writes for a float (shortest round trip, so
/// `2097152.5`, `1e300`), as the import before streaming stored it.
pub fn float_text(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

/// A value: a string's bytes, a number's or boolean's JSON text, null as
/// empty; an object or array is an error naming `what`.
pub struct Scalar<'a> {
    /// What the value is, for the error: `"value"` or `the value of /a/b`.
    pub what: &'a str,
}

impl<'de> DeserializeSeed<'de> for Scalar<'_> {
    type Value = Cow<'de, [u8]>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar<'_> {
    type Value = Cow<'de, [u8]>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} to be a string, number, boolean or null", self.what)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v.as_bytes()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.as_bytes().to_vec()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(if v { b"true" } else { b"false" }))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string().into_bytes()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string().into_bytes()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(float_text(v).into_bytes()))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(b""))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!("{} must be a string, number, boolean or null, not an object", self.what)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!("{} must be a string, number, boolean or null, not an array", self.what)))
    }
}

/// A base64 string's bytes; anything else is an error naming `what`.
pub struct Base64<'a> {
    pub what: &'a str,
}

impl<'de> DeserializeSeed<'de> for Base64<'_> {
    type Value = Vec<u8>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Base64<'_> {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} to be a base64 string", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        base64::decode(v).ok_or_else(|| E::custom(format!("{} is not a valid base64 string", self.what)))
    }
}
