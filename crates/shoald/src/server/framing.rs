//! Reading whole messages from a byte stream, within the protocol's limits.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::{Header, HEADER_LEN, PAYLOAD_MAX};

/// Why a connection's input ended.
#[derive(Debug)]
pub enum InputEnd {
    /// The client closed its end between messages.
    Closed,
    /// The client closed its end inside a message.
    Truncated,
    /// A header announced more than [`PAYLOAD_MAX`] bytes: the stock daemons
    /// drop such a connection, since the stream cannot be resynchronised.
    TooLong(u32),
    Io(std::io::Error),
}

impl std::fmt::Display for InputEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputEnd::Closed => f.write_str("closed by the client"),
            InputEnd::Truncated => f.write_str("closed by the client inside a message"),
            InputEnd::TooLong(len) => write!(f, "a header announced {len} payload bytes (the limit is {PAYLOAD_MAX})"),
            InputEnd::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

/// Reads one message. A clean end of stream before the header is
/// [`InputEnd::Closed`].
pub async fn read_message<R: AsyncRead + Unpin>(input: &mut R, payload: &mut Vec<u8>) -> Result<Header, InputEnd> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match input.read(&mut head[got..]).await {
            Ok(0) if got == 0 => return Err(InputEnd::Closed),
            Ok(0) => return Err(InputEnd::Truncated),
            Ok(n) => got += n,
            Err(e) => return Err(InputEnd::Io(e)),
        }
    }
    let header = Header::decode(&head);
    if header.len as usize > PAYLOAD_MAX {
        return Err(InputEnd::TooLong(header.len));
    }
    payload.clear();
    payload.resize(header.len as usize, 0);
    match input.read_exact(payload).await {
        Ok(_) => Ok(header),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(InputEnd::Truncated),
        Err(e) => Err(InputEnd::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    fn message(kind: u32, payload: &[u8]) -> Vec<u8> {
        Message { kind, req_id: 5, tx_id: 0, payload: payload.to_vec() }.to_bytes()
    }

    #[tokio::test]
    async fn reads_messages_back_to_back_and_at_the_length_limit() {
        let mut bytes = message(2, b"/a\0");
        bytes.extend(message(11, &vec![b'x'; PAYLOAD_MAX]));
        let mut input = &bytes[..];
        let mut payload = Vec::new();
        let h = read_message(&mut input, &mut payload).await.unwrap();
        assert_eq!((h.kind, h.req_id, payload.as_slice()), (2, 5, &b"/a\0"[..]));
        let h = read_message(&mut input, &mut payload).await.unwrap();
        assert_eq!((h.kind, payload.len()), (11, PAYLOAD_MAX));
        assert!(matches!(read_message(&mut input, &mut payload).await, Err(InputEnd::Closed)));
    }

    #[tokio::test]
    async fn lengths_over_the_limit_and_short_input_end_the_connection() {
        let mut over = message(11, b"");
        over[12..16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_ne_bytes());
        let mut payload = Vec::new();
        let end = read_message(&mut &over[..], &mut payload).await;
        assert!(matches!(end, Err(InputEnd::TooLong(4097))), "{end:?}");

        let whole = message(2, b"/abc\0");
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, whole.len() - 1] {
            let end = read_message(&mut &whole[..cut], &mut payload).await;
            assert!(matches!(end, Err(InputEnd::Truncated)), "cut at {cut}: {end:?}");
        }
    }
}
