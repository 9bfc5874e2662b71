//! A request payload's fields: NUL-terminated strings, and for `WRITE` a
//! trailing value that may hold NULs itself.

/// What is wrong with a payload; every case is answered with `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// A field the request needs is missing.
    Missing,
    /// The last field has no terminating NUL.
    Unterminated,
    /// More fields than the request takes.
    Extra,
    /// A field that must be text is not UTF-8.
    NotText,
}

/// Reads a payload's NUL-terminated fields from the front.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(payload: &'a [u8]) -> Fields<'a> {
        Fields { rest: payload }
    }

    /// The next NUL-terminated field, without its NUL.
    pub fn next_bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        if self.rest.is_empty() {
            return Err(PayloadError::Missing);
        }
        let end = self.rest.iter().position(|&b| b == 0).ok_or(PayloadError::Unterminated)?;
        let field = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(field)
    }

    /// The next field as text.
    pub fn next_str(&mut self) -> Result<&'a str, PayloadError> {
        std::str::from_utf8(self.next_bytes()?).map_err(|_| PayloadError::NotText)
    }

    /// The next field if there is one.
    pub fn next_optional(&mut self) -> Result<Option<&'a str>, PayloadError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        self.next_str().map(Some)
    }

    /// Everything left, as is (a `WRITE`'s value).
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless every byte was read.
    pub fn end(self) -> Result<(), PayloadError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(PayloadError::Extra)
        }
    }

    /// The payload as exactly one NUL-terminated text field (the stock
    /// daemons' `onearg`: one NUL, at the end).
    pub fn one(payload: &'a [u8]) -> Result<&'a str, PayloadError> {
        let mut fields = Fields::new(payload);
        let field = fields.next_str()?;
        fields.end()?;
        Ok(field)
    }

    /// Every remaining field (for lists such as `SET_PERMS`'s permissions).
    pub fn all(mut self) -> Result<Vec<&'a str>, PayloadError> {
        let mut out = Vec::new();
        while !self.rest.is_empty() {
            out.push(self.next_str()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_needs_exactly_one_terminating_nul() {
        assert_eq!(Fields::one(b"/a\0"), Ok("/a"));
        assert_eq!(Fields::one(b"\0"), Ok(""));
        assert_eq!(Fields::one(b""), Err(PayloadError::Missing));
        assert_eq!(Fields::one(b"/a"), Err(PayloadError::Unterminated));
        assert_eq!(Fields::one(b"/a\0b\0"), Err(PayloadError::Extra));
        assert_eq!(Fields::one(b"/a\0\0"), Err(PayloadError::Extra));
        assert_eq!(Fields::one(b"\xff\0"), Err(PayloadError::NotText));
    }

    #[test]
    fn a_write_value_keeps_its_nuls_and_may_be_empty() {
        let mut f = Fields::new(b"/a\0v\0w\0");
        assert_eq!(f.next_str(), Ok("/a"));
        assert_eq!(f.rest(), b"v\0w\0");
        let mut f = Fields::new(b"/a\0");
        assert_eq!(f.next_str(), Ok("/a"));
        assert_eq!(f.rest(), b"");
    }

    #[test]
    fn all_fields_and_optional_ones() {
        assert_eq!(Fields::new(b"/a\0b0\0r5\0").all(), Ok(vec!["/a", "b0", "r5"]));
        assert_eq!(Fields::new(b"/a\0b0").all(), Err(PayloadError::Unterminated));
        let mut f = Fields::new(b"x\0");
        assert_eq!(f.next_optional(), Ok(Some("x")));
        assert_eq!(f.next_optional(), Ok(None));
    }
}
