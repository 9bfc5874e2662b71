//! Node permissions: an owner and per-domain access, as `GET_PERMS` and
//! `SET_PERMS` spell them (`b0`, `r7`, `w3`, `n5`).
//!
//! The first entry names the owner, and its access letter is what every
//! domain not listed after it gets. The owner, privileged connections and
//! a domain that `SET_TARGET` made the owner's keeper may do anything.
//!
//! Stored as the wire form itself (each entry NUL-terminated), so the
//! permissions of a node are also readable in place by a process on the
//! host, and `GET_PERMS` replies with the stored bytes.

use crate::wire::XsError;

/// What an entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

impl Access {
    pub const NONE: Access = Access { read: false, write: false };
    pub const ALL: Access = Access { read: true, write: true };

    fn letter(self) -> u8 {
        match (self.read, self.write) {
            (false, false) => b'n',
            (true, false) => b'r',
            (false, true) => b'w',
            (true, true) => b'b',
        }
    }

    fn from_letter(letter: u8) -> Option<Access> {
        Some(match letter {
            b'n' => Access::NONE,
            b'r' => Access { read: true, write: false },
            b'w' => Access { read: false, write: true },
            b'b' => Access::ALL,
            _ => return None,
        })
    }
}

/// One entry: a domain and what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u32,
    pub access: Access,
}

/// Largest domain id a permission may name (domain ids are 16 bits).
pub const DOMID_MAX: u32 = 0xffff;

impl Perm {
    /// Parses `b0`, `r7`, ...: a letter, then a domain id read as the stock
    /// C daemon reads it (`strtol` with base 0: `010` is 8, `0x10` is 16,
    /// a sign is allowed), every character consumed.
    pub fn parse(text: &str) -> Result<Perm, XsError> {
        let bytes = text.as_bytes();
        let access = bytes.first().and_then(|&l| Access::from_letter(l)).ok_or(XsError::EINVAL)?;
        let domid = strtol_base0(&text[1..]).ok_or(XsError::EINVAL)?;
        let domid = u32::try_from(domid).ok().filter(|&d| d <= DOMID_MAX).ok_or(XsError::EINVAL)?;
        Ok(Perm { domid, access })
    }
}

/// C's `strtol(text, &end, 0)` when the whole text must be a number:
/// leading blanks, a sign, then `0x` hexadecimal, `0` octal or decimal.
fn strtol_base0(text: &str) -> Option<i64> {
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        (16, hex)
    } else if rest.len() > 1 && rest.starts_with('0') {
        (8, &rest[1..])
    } else {
        (10, rest)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let value = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -value } else { value })
}

/// A node's permissions: at least one entry; the first is the owner's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms {
    entries: Vec<Perm>,
}

/// Who asks: the identity an access check needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub domid: u32,
    /// Dom0 and the local sockets: every check passes.
    pub privileged: bool,
    /// The domain `SET_TARGET` made this one the keeper of.
    pub target: Option<u32>,
}

impl Perms {
    pub fn new(entries: Vec<Perm>) -> Result<Perms, XsError> {
        if entries.is_empty() {
            return Err(XsError::EINVAL);
        }
        Ok(Perms { entries })
    }

    /// Owned by `domid`, which no one else may read or write.
    pub fn owned_by(domid: u32) -> Perms {
        Perms { entries: vec![Perm { domid, access: Access::NONE }] }
    }

    pub fn owner(&self) -> u32 {
        self.entries[0].domid
    }

    pub fn entries(&self) -> &[Perm] {
        &self.entries
    }

    /// The same permissions with `owner` as the owner.
    pub fn with_owner(&self, owner: u32) -> Perms {
        let mut entries = self.entries.clone();
        entries[0].domid = owner;
        Perms { entries }
    }

    /// Parses `SET_PERMS`'s list.
    pub fn parse_list(texts: &[&str]) -> Result<Perms, XsError> {
        Perms::new(texts.iter().map(|t| Perm::parse(t)).collect::<Result<_, _>>()?)
    }

    /// The wire (and stored) form: each entry NUL-terminated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 4);
        for p in &self.entries {
            out.push(p.access.letter());
            out.extend_from_slice(p.domid.to_string().as_bytes());
            out.push(0);
        }
        out
    }

    /// Reads the stored form back; `None` if the bytes are not a list of
    /// entries (a damaged or foreign value: callers treat the node as
    /// owned by dom0 with no access for others).
    pub fn decode(bytes: &[u8]) -> Option<Perms> {
        let text = std::str::from_utf8(bytes).ok()?;
        let body = text.strip_suffix('\0')?;
        let entries: Option<Vec<Perm>> = body.split('\0').map(|t| Perm::parse(t).ok()).collect();
        Perms::new(entries?).ok()
    }

    /// What `caller` may do here (the stock daemons' `perm_for_conn`): the
    /// owner's side gets everything; otherwise the first entry naming the
    /// caller or its target; otherwise the owner entry's access letter.
    pub fn access_for(&self, caller: &Caller) -> Access {
        let owner = self.owner();
        if caller.privileged || owner == caller.domid || caller.target == Some(owner) {
            return Access::ALL;
        }
        self.entries[1..]
            .iter()
            .find(|p| p.domid == caller.domid || caller.target == Some(p.domid))
            .map_or(self.entries[0].access, |p| p.access)
    }

    /// Whether `caller` owns the node (it may then change its permissions).
    pub fn is_owned_by(&self, caller: &Caller) -> bool {
        caller.privileged || self.owner() == caller.domid || caller.target == Some(self.owner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(domid: u32) -> Caller {
        Caller { domid, privileged: false, target: None }
    }

    #[test]
    fn entries_parse_and_print_as_on_the_wire() {
        let perms = Perms::parse_list(&["b7", "r0", "n3", "w65535"]).unwrap();
        assert_eq!(perms.owner(), 7);
        assert_eq!(perms.encode(), b"b7\0r0\0n3\0w65535\0");
        assert_eq!(Perms::decode(&perms.encode()), Some(perms));
        for bad in ["", "b", "x1", "b-1", "b65536", "b1a", "B1", "b123456", "b0x", "b08", "b1 "] {
            assert_eq!(Perm::parse(bad), Err(XsError::EINVAL), "{bad:?}");
        }
        // Ids read as cxenstored's strtol(.., 0) reads them.
        for (text, domid) in [("n010", 8), ("n0x10", 16), ("n0X1f", 31), ("n-0", 0), ("r 7", 7), ("r+7", 7), ("n0", 0)]
        {
            assert_eq!(Perm::parse(text).map(|p| p.domid), Ok(domid), "{text:?}");
        }
        assert_eq!(Perms::parse_list(&[]), Err(XsError::EINVAL));
        assert_eq!(Perms::decode(b""), None);
        assert_eq!(Perms::decode(b"b0"), None);
        assert_eq!(Perms::decode(b"b0\0\0"), None);
    }

    #[test]
    fn access_follows_owner_then_entries_then_the_default() {
        // Owned by 7; 5 may read; everyone else may write but not read.
        let perms = Perms::parse_list(&["w7", "r5"]).unwrap();
        assert_eq!(perms.access_for(&guest(7)), Access::ALL);
        assert_eq!(perms.access_for(&guest(5)), Access { read: true, write: false });
        assert_eq!(perms.access_for(&guest(9)), Access { read: false, write: true });
        assert_eq!(perms.access_for(&Caller { domid: 9, privileged: true, target: None }), Access::ALL);
        // A keeper of domain 7 is treated as 7; of domain 5, as 5.
        assert_eq!(perms.access_for(&Caller { domid: 9, privileged: false, target: Some(7) }), Access::ALL);
        let keeper_of_5 = Caller { domid: 9, privileged: false, target: Some(5) };
        assert_eq!(perms.access_for(&keeper_of_5), Access { read: true, write: false });
        assert!(perms.is_owned_by(&guest(7)));
        assert!(!perms.is_owned_by(&guest(5)));
    }
}
