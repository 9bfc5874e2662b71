//! Resolves buffer references in its own process: `bufref-client STORE`.
//!
//! Prints `ready`, then answers one line per request read from stdin, each
//! `MODE HEX [TARGET]` where HEX is an encoded `BufRef`:
//! * `slice HEX`: `Reader::resolve`; prints `ok len=N crc=C mapped=1` when
//!   the bytes lie inside this process's shared mapping (no copy);
//! * `copy HEX`: `Reader::read_buf` into a buffer; `ok len=N crc=C`;
//! * `send-file HEX PATH`: `Reader::send_buf` into a new file at PATH;
//! * `send-socket HEX PATH`: `Reader::send_buf` into a unix socket
//!   connected to PATH; both print `ok len=N`.
//!
//! A failure prints `error stale|invalid|other: MESSAGE`. CRCs are CRC32C.

use std::io::BufRead;

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

fn answer(reader: &shoal::Reader, line: &str) -> shoal::Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let r = shoal::BufRef::decode(&decode_hex(words[1]))?;
    Ok(match words[0] {
        "slice" => {
            let view = reader.resolve(&r)?;
            let range = view.snapshot().mapping_address_range();
            let mapped = range.contains(&(view.as_ptr() as usize)) && view.as_ptr() as usize + view.len() <= range.end;
            format!("ok len={} crc={} mapped={}", view.len(), crc32c::crc32c(&view), u8::from(mapped))
        }
        "copy" => {
            let mut buf = vec![0u8; r.len()];
            let n = reader.read_buf(&r, &mut buf)?;
            format!("ok len={n} crc={}", crc32c::crc32c(&buf))
        }
        "send-file" => {
            let file = std::fs::File::create(words[2]).expect("create target file");
            format!("ok len={}", reader.send_buf(&r, &file)?)
        }
        "send-socket" => {
            let socket = std::os::unix::net::UnixStream::connect(words[2]).expect("connect");
            format!("ok len={}", reader.send_buf(&r, &socket)?)
        }
        other => panic!("unknown mode {other}"),
    })
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: bufref-client STORE");
    let reader = shoal::Reader::open(&dir).expect("open reader");
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        match answer(&reader, &line) {
            Ok(reply) => println!("{reply}"),
            Err(e @ shoal::Error::StaleBufRef { .. }) => println!("error stale: {e}"),
            Err(e @ shoal::Error::InvalidBufRef { .. }) => println!("error invalid: {e}"),
            Err(e) => println!("error other: {e}"),
        }
    }
}
