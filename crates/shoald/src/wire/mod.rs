//! The xenstore wire protocol: message headers, message types and error
//! names (Xen's `xs_wire.h`), and the payload's NUL-separated fields.
//!
//! Every message, in either direction, is a 16-byte header followed by
//! `len` payload bytes:
//!
//! ```text
//!  0        4        8        12       16
//!  +--------+--------+--------+--------+-------------------------+
//!  | type   | req_id | tx_id  | len    | payload (len ≤ 4096)    |
//!  +--------+--------+--------+--------+-------------------------+
//! ```
//!
//! The four fields are `u32` in the host's byte order: the protocol only
//! ever crosses a unix socket or a ring page shared with a guest on the same
//! machine.

mod payload;

pub use payload::{Fields, PayloadError};

/// Bytes in a message header.
pub const HEADER_LEN: usize = 16;
/// Longest payload in either direction (`XENSTORE_PAYLOAD_MAX`). A client
/// that announces more loses its connection, as with the stock daemons.
pub const PAYLOAD_MAX: usize = 4096;

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message type: a [`MsgType`] number, or anything a client sent.
    pub kind: u32,
    /// Chosen by the client, echoed in the reply.
    pub req_id: u32,
    /// The transaction the request belongs to (0: none), echoed in the reply.
    pub tx_id: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

impl Header {
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header { kind: word(0), req_id: word(4), tx_id: word(8), len: word(12) }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (i, word) in [self.kind, self.req_id, self.tx_id, self.len].into_iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    /// The message type, if it is one this daemon knows.
    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_wire(self.kind)
    }
}

macro_rules! msg_types {
    ($($name:ident = $value:literal, $wire:literal;)*) => {
        /// The message types of `xs_wire.h` (Xen 4.17, plus the feature and
        /// quota messages that later versions number 23 to 26).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType {
            $($name = $value,)*
        }

        impl MsgType {
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name,)*];

            pub fn from_wire(value: u32) -> Option<MsgType> {
                match value {
                    $($value => Some(MsgType::$name),)*
                    _ => None,
                }
            }

            /// The name the protocol's documents use (`XS_` left off).
            pub fn name(self) -> &'static str {
                match self {
                    $(MsgType::$name => $wire,)*
                }
            }
        }
    };
}

msg_types! {
    Control = 0, "CONTROL";
    Directory = 1, "DIRECTORY";
    Read = 2, "READ";
    GetPerms = 3, "GET_PERMS";
    Watch = 4, "WATCH";
    Unwatch = 5, "UNWATCH";
    TransactionStart = 6, "TRANSACTION_START";
    TransactionEnd = 7, "TRANSACTION_END";
    Introduce = 8, "INTRODUCE";
    Release = 9, "RELEASE";
    GetDomainPath = 10, "GET_DOMAIN_PATH";
    Write = 11, "WRITE";
    Mkdir = 12, "MKDIR";
    Rm = 13, "RM";
    SetPerms = 14, "SET_PERMS";
    WatchEvent = 15, "WATCH_EVENT";
    Error = 16, "ERROR";
    IsDomainIntroduced = 17, "IS_DOMAIN_INTRODUCED";
    Resume = 18, "RESUME";
    SetTarget = 19, "SET_TARGET";
    ResetWatches = 21, "RESET_WATCHES";
    DirectoryPart = 22, "DIRECTORY_PART";
    GetFeature = 23, "GET_FEATURE";
    SetFeature = 24, "SET_FEATURE";
    GetQuota = 25, "GET_QUOTA";
    SetQuota = 26, "SET_QUOTA";
}

macro_rules! xs_errors {
    ($($name:ident),* $(,)?) => {
        /// The error names a reply may carry (`xsd_errors` in `xs_wire.h`):
        /// the name travels as text in an `ERROR` reply.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum XsError {
            $($name,)*
        }

        impl XsError {
            pub const ALL: &'static [XsError] = &[$(XsError::$name,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(XsError::$name => stringify!($name),)*
                }
            }

            pub fn from_name(name: &str) -> Option<XsError> {
                match name {
                    $(stringify!($name) => Some(XsError::$name),)*
                    _ => None,
                }
            }
        }
    };
}

xs_errors!(
    EINVAL, EACCES, EEXIST, EISDIR, ENOENT, ENOMEM, ENOSPC, EIO, ENOTEMPTY, ENOSYS, EROFS, EBUSY, EAGAIN, EISCONN,
    E2BIG, EPERM
);

impl std::fmt::Display for XsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for XsError {}

/// A whole message: header fields and payload, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Message {
    /// The reply to `request` with `payload` (same type, request and
    /// transaction ids).
    pub fn reply(request: &Header, payload: Vec<u8>) -> Message {
        Message { kind: request.kind, req_id: request.req_id, tx_id: request.tx_id, payload }
    }

    /// The `OK` reply most requests that change something get.
    pub fn ok(request: &Header) -> Message {
        Message::reply(request, b"OK\0".to_vec())
    }

    /// An `ERROR` reply naming `error`, with the request's ids.
    pub fn error(request: &Header, error: XsError) -> Message {
        let mut payload = error.name().as_bytes().to_vec();
        payload.push(0);
        Message { kind: MsgType::Error as u32, req_id: request.req_id, tx_id: request.tx_id, payload }
    }

    /// A `WATCH_EVENT` for `path` and `token` (request and transaction ids 0).
    pub fn watch_event(path: &[u8], token: &[u8]) -> Message {
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path);
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        Message { kind: MsgType::WatchEvent as u32, req_id: 0, tx_id: 0, payload }
    }

    pub fn header(&self) -> Header {
        Header { kind: self.kind, req_id: self.req_id, tx_id: self.tx_id, len: self.payload.len() as u32 }
    }

    /// Bytes on the wire (and, near enough, in a queue).
    pub fn size(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Header and payload, as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header().encode());
        out.extend_from_slice(&self.payload);
        out
    }
}

impl MsgType {
    /// Whether only privileged connections (dom0) may send it.
    pub fn privileged(self) -> bool {
        matches!(
            self,
            MsgType::Control
                | MsgType::Introduce
                | MsgType::Release
                | MsgType::IsDomainIntroduced
                | MsgType::Resume
                | MsgType::SetTarget
                | MsgType::SetFeature
                | MsgType::GetQuota
                | MsgType::SetQuota
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_host_byte_order() {
        let header = Header { kind: 11, req_id: 0xdead_beef, tx_id: 7, len: 4096 };
        let bytes = header.encode();
        assert_eq!(&bytes[0..4], &11u32.to_ne_bytes());
        assert_eq!(&bytes[12..16], &4096u32.to_ne_bytes());
        assert_eq!(Header::decode(&bytes), header);
    }

    #[test]
    fn message_type_numbers_are_those_of_xs_wire_h() {
        // xs_wire.h numbers the enum from 0; 20 (XS_RESTRICT) was removed.
        assert_eq!(MsgType::from_wire(0), Some(MsgType::Control));
        assert_eq!(MsgType::from_wire(2), Some(MsgType::Read));
        assert_eq!(MsgType::from_wire(11), Some(MsgType::Write));
        assert_eq!(MsgType::from_wire(16), Some(MsgType::Error));
        assert_eq!(MsgType::from_wire(19), Some(MsgType::SetTarget));
        assert_eq!(MsgType::from_wire(20), None);
        assert_eq!(MsgType::from_wire(21), Some(MsgType::ResetWatches));
        assert_eq!(MsgType::from_wire(22), Some(MsgType::DirectoryPart));
        assert_eq!(MsgType::from_wire(26), Some(MsgType::SetQuota));
        assert_eq!(MsgType::from_wire(27), None);
        assert_eq!(MsgType::from_wire(0xffff), None);
        for &t in MsgType::ALL {
            assert_eq!(MsgType::from_wire(t as u32), Some(t));
        }
    }

    #[test]
    fn error_names_round_trip() {
        assert_eq!(XsError::ALL.len(), 16);
        for &e in XsError::ALL {
            assert_eq!(XsError::from_name(e.name()), Some(e));
        }
        assert_eq!(XsError::from_name("EQUOTA"), None);
    }

    #[test]
    fn an_error_reply_keeps_the_ids_and_names_the_error() {
        let request = Header { kind: MsgType::Read as u32, req_id: 9, tx_id: 3, len: 2 };
        let reply = Message::error(&request, XsError::ENOENT);
        assert_eq!(reply.kind, MsgType::Error as u32);
        assert_eq!((reply.req_id, reply.tx_id), (9, 3));
        assert_eq!(reply.payload, b"ENOENT\0");
        let bytes = reply.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 7);
        assert_eq!(Header::decode(bytes[..HEADER_LEN].try_into().unwrap()).len, 7);
    }
}
