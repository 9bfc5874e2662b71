//! Large values moved host to host, not through etcd: a value at or above
//! the cluster's blob threshold (or one that would read as a reference) is
//! committed as a *reference*, its BLAKE3 hash, its size and the hosts that
//! hold it, and etcd holds only that. A replica that applies a reference
//! fetches the bytes from a holder (the forwarding socket serves them),
//! checks them against the hash, and only then commits the version that
//! holds them; the version it publishes holds the value itself, read in
//! place like any other. The bytes go into the store one blob at a time,
//! at a staging path, before that version ([`Blobs::stage`]), so a replica
//! never holds more than one blob in memory.
//!
//! Where a host finds a blob's bytes: among the ones its own commits wait
//! to see applied (`pending`), or in its store, where the version that
//! applied a reference recorded the path that holds the bytes
//! (`LOCAL_ROOT/blobs/HASH/ENTRY` = path, one entry per path, removed when
//! the path's value changes). Where it fetches them: from the holders the
//! reference names (the committing host), else from any live host (each
//! that applied the reference holds them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::forward::{self, Reply, Request};
use crate::layout::Layout;
use crate::Error;

/// Every value in etcd that starts with these bytes is a reference.
pub const MAGIC: &[u8] = b"\0shoal-blob\0";

/// Where a blob can be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub address: String,
}

/// What etcd holds for a large value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// BLAKE3 of the bytes, hex.
    pub hash: String,
    pub size: u64,
    pub holders: Vec<Holder>,
}

impl BlobRef {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&serde_json::to_vec(self).expect("serializable"));
        out
    }

    /// The reference `value` is, if it is one (`Err` if it starts like one
    /// and is not: no writer of this cluster wrote it).
    pub fn decode(value: &[u8]) -> Option<Result<BlobRef, String>> {
        let json = value.strip_prefix(MAGIC)?;
        let blob: BlobRef = match serde_json::from_slice(json) {
            Ok(blob) => blob,
            Err(e) => return Some(Err(format!("a damaged blob reference: {e}"))),
        };
        // No bytes could match another hash, and a hash names paths.
        if blob.hash.len() != 64 || !blob.hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Some(Err(format!("a damaged blob reference: {:?} is not a BLAKE3 hash", blob.hash)));
        }
        Some(Ok(blob))
    }
}

pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Whether `value` goes to etcd as a reference.
pub fn is_blob(value: &[u8], threshold: usize) -> bool {
    value.len() >= threshold || value.starts_with(MAGIC)
}

/// A host's blobs: the ones its commits wait for, and where its store
/// holds the others.
pub struct Blobs {
    store: &'static Store,
    layout: Layout,
    /// To find the other hosts when a reference's holders fail.
    client: etcd_client::Client,
    host: String,
    /// Bytes held for commits, by hash.
    pending: Mutex<HashMap<String, Held>>,
}

/// A blob's bytes, and how many commits hold them.
type Held = (Arc<Vec<u8>>, usize);

/// How long sending one blob to a fetcher may take (as long as fetching
/// it may).
const SEND_TIMEOUT: Duration = FETCH_TIMEOUT;

/// How long fetching one blob from one holder may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

impl Blobs {
    pub fn new(store: &'static Store, layout: Layout, client: etcd_client::Client, host: &str) -> Blobs {
        Blobs { store, layout, client, host: host.to_string(), pending: Mutex::new(HashMap::new()) }
    }

    /// Keeps `bytes` where this host serves them from until `release`.
    pub fn hold(&self, hash: &str, bytes: Arc<Vec<u8>>) {
        self.pending.lock().unwrap().entry(hash.to_string()).or_insert((bytes, 0)).1 += 1;
    }

    pub fn release(&self, hash: &str) {
        let mut pending = self.pending.lock().unwrap();
        if let Some((_, holders)) = pending.get_mut(hash) {
            *holders -= 1;
            if *holders == 0 {
                pending.remove(hash);
            }
        }
    }

    /// The bytes of blob `hash`, if this host has them.
    pub fn local(&self, hash: &str) -> Option<Arc<Vec<u8>>> {
        if let Some((bytes, _)) = self.pending.lock().unwrap().get(hash) {
            return Some(bytes.clone());
        }
        let snapshot = self.store.snapshot();
        let path = self.stored_path(&snapshot, hash)?;
        Some(Arc::new(snapshot.get(&path).ok()??.to_vec()))
    }

    fn stored_path(&self, snapshot: &shoal::Snapshot, hash: &str) -> Option<String> {
        stored_path(snapshot, &self.layout, hash)
    }

    /// Puts `blob`'s bytes at its staging path ([`Layout::staged_path`])
    /// in a version of their own, unless they are there already, and
    /// returns that path: a replica applies a version that holds blobs by
    /// copying each from there by reference, so it never holds more than
    /// one blob in memory, and bytes fetched before a failure stay fetched.
    /// Bytes the store holds at another path are copied by reference, not
    /// fetched. The replica deletes the staging paths in the version that
    /// applies them.
    pub async fn stage(&self, blob: &BlobRef) -> Result<String, Error> {
        let staged = self.layout.staged_path(&blob.hash);
        let stored = {
            let snapshot = self.store.snapshot();
            if snapshot.exists(&staged)? {
                return Ok(staged);
            }
            self.stored_path(&snapshot, &blob.hash)
        };
        if let Some(path) = stored {
            let mut txn = self.store.begin();
            txn.copy(&path, &staged)?;
            txn.commit()?;
            return Ok(staged);
        }
        let bytes = self.fetch(blob).await?;
        let mut txn = self.store.begin();
        txn.put(&staged, &bytes[..])?;
        txn.commit()?;
        Ok(staged)
    }

    /// The bytes `blob` stands for: this host's, or fetched from a holder
    /// and checked against the hash. `Error::BlobUnavailable` if no holder
    /// has them (or every one sent bytes that are not them).
    pub async fn fetch(&self, blob: &BlobRef) -> Result<Arc<Vec<u8>>, Error> {
        if let Some(bytes) = self.local(&blob.hash) {
            return Ok(bytes);
        }
        let mut why = Vec::new();
        let mut tried = std::collections::HashSet::new();
        for holder in &blob.holders {
            tried.insert(holder.host.clone());
            match tokio::time::timeout(FETCH_TIMEOUT, fetch_from(&holder.address, blob)).await {
                Ok(Ok(bytes)) => return Ok(Arc::new(bytes)),
                Ok(Err(e)) => why.push(format!("{}: {e}", holder.host)),
                Err(_) => why.push(format!("{}: no answer in {FETCH_TIMEOUT:?}", holder.host)),
            }
        }
        // Every host that applied the reference holds the bytes too: ask
        // the live ones.
        let hosts = match crate::presence::cluster_status(&mut self.client.clone(), &self.layout).await {
            Ok(hosts) => hosts,
            Err(e) => {
                why.push(format!("the other hosts: {e}"));
                Vec::new()
            }
        };
        for entry in hosts {
            let status = entry.status;
            let Some(address) = status.forward.filter(|_| status.host != self.host && !tried.contains(&status.host))
            else {
                continue;
            };
            match tokio::time::timeout(FETCH_TIMEOUT, fetch_from(&address, blob)).await {
                Ok(Ok(bytes)) => return Ok(Arc::new(bytes)),
                Ok(Err(e)) => why.push(format!("{}: {e}", status.host)),
                Err(_) => why.push(format!("{}: no answer in {FETCH_TIMEOUT:?}", status.host)),
            }
        }
        Err(Error::BlobUnavailable { hash: blob.hash.clone(), why: why.join("; ") })
    }
}

/// A path that holds blob `hash`'s bytes in `snapshot`, if one does: one
/// the index names whose value still is those bytes.
fn stored_path(snapshot: &shoal::Snapshot, layout: &Layout, hash: &str) -> Option<String> {
    let index = layout.blob_index_path(hash);
    snapshot.list(&index).ok()?.into_iter().find_map(|name| {
        let path = std::str::from_utf8(snapshot.get(&format!("{index}/{name}")).ok()??).ok()?;
        let bytes = snapshot.get(path).ok()??;
        // The node may have been written since: only the same bytes do.
        (self::hash(bytes) == hash).then(|| path.to_string())
    })
}

/// Asks the host at `address` for `blob`'s bytes and checks them.
async fn fetch_from(address: &str, blob: &BlobRef) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    forward::write_frame(&mut stream, &Request::Blob { hash: blob.hash.clone() }).await.map_err(|e| e.to_string())?;
    match forward::read_frame::<Reply>(&mut stream).await.map_err(|e| e.to_string())? {
        Some(Reply::BlobFollows { size }) if size == blob.size => {}
        Some(Reply::BlobFollows { size }) => return Err(format!("offers {size} bytes, not {}", blob.size)),
        Some(Reply::NoBlob) => return Err("does not have it".into()),
        other => return Err(format!("answered {other:?}")),
    }
    let mut bytes = Vec::with_capacity(blob.size as usize);
    (&mut stream).take(blob.size).read_to_end(&mut bytes).await.map_err(|e| e.to_string())?;
    if bytes.len() as u64 != blob.size {
        return Err(format!("sent {} bytes of {}", bytes.len(), blob.size));
    }
    if hash(&bytes) != blob.hash {
        return Err("sent bytes whose hash is not the blob's: refused".into());
    }
    Ok(bytes)
}

/// Serves blob `hash` on a forwarding connection: a `BlobFollows` frame,
/// then the bytes as they are: held ones written from memory, stored ones
/// sent with `sendfile` from the store's arena file (`Reader::send_buf`),
/// without passing through this process. Gives the connection back.
pub(crate) async fn serve(blobs: &Blobs, hash: &str, mut stream: TcpStream) -> std::io::Result<TcpStream> {
    let held = blobs.pending.lock().unwrap().get(hash).map(|(bytes, _)| bytes.clone());
    if let Some(bytes) = held {
        let send = async {
            forward::write_frame(&mut stream, &Reply::BlobFollows { size: bytes.len() as u64 }).await?;
            stream.write_all(&bytes).await
        };
        tokio::time::timeout(SEND_TIMEOUT, send)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        return Ok(stream);
    }
    // Found, announced and sent with `sendfile` (which blocks until every
    // byte is written) on a blocking thread, the socket blocking meanwhile,
    // through a reader of the store's own (`Reader`s stay on one thread).
    let (layout, hash) = (blobs.layout.clone(), hash.to_string());
    let dir = blobs.store.dir().to_path_buf();
    let socket = stream.into_std()?;
    socket.set_nonblocking(false)?;
    // A fetcher that stops reading gives up its turn.
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let (socket, served) = tokio::task::spawn_blocking(move || {
        let served = send_stored(&dir, &layout, &hash, &socket);
        (socket, served)
    })
    .await
    .map_err(std::io::Error::other)?;
    socket.set_nonblocking(true)?;
    served?;
    TcpStream::from_std(socket)
}

/// Writes a `BlobFollows` frame and the bytes of blob `hash` in the store
/// in `dir` (or `NoBlob`) to the blocking `socket`.
fn send_stored(
    dir: &std::path::Path,
    layout: &Layout,
    hash: &str,
    socket: &std::net::TcpStream,
) -> std::io::Result<()> {
    use std::io::Write;
    let frame = forward::frame::<Reply>;
    let mut out = socket;
    let found = (|| {
        let reader = shoal::Reader::open(dir).ok()?;
        let snapshot = reader.snapshot().ok()?;
        let path = stored_path(&snapshot, layout, hash)?;
        let handle = snapshot.buf_ref(&path).ok()??;
        Some((reader, handle))
    })();
    let Some((reader, handle)) = found else {
        return out.write_all(&frame(&Reply::NoBlob)?);
    };
    out.write_all(&frame(&Reply::BlobFollows { size: handle.len() as u64 })?)?;
    reader.send_buf(&handle, socket).map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that answers every request for a blob with `bytes`.
    async fn holder_sending(bytes: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = forward::read_frame::<Request>(&mut stream).await;
                let _ = forward::write_frame(&mut stream, &Reply::BlobFollows { size: bytes.len() as u64 }).await;
                let _ = stream.write_all(&bytes).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn bytes_that_are_not_the_blob_are_refused() {
        let good = vec![7u8; 100_000];
        let mut bad = good.clone();
        bad[50_000] ^= 1;
        let blob = BlobRef { hash: hash(&good), size: good.len() as u64, holders: vec![] };
        let refused = fetch_from(&holder_sending(bad).await, &blob).await.unwrap_err();
        assert!(refused.contains("hash is not the blob's"), "{refused}");
        let short = fetch_from(&holder_sending(good[..10].to_vec()).await, &blob).await.unwrap_err();
        assert!(short.contains("offers 10 bytes"), "{short}");
        assert_eq!(fetch_from(&holder_sending(good.clone()).await, &blob).await.unwrap(), good);
    }

    #[test]
    fn references_are_told_from_values() {
        let blob =
            BlobRef { hash: hash(b"x"), size: 1, holders: vec![Holder { host: "h".into(), address: "a:1".into() }] };
        assert_eq!(BlobRef::decode(&blob.encode()), Some(Ok(blob.clone())));
        assert_eq!(BlobRef::decode(b"plain"), None);
        assert!(matches!(BlobRef::decode(&[MAGIC, b"junk"].concat()), Some(Err(_))));
        // A hash that is not 64 lowercase hex digits is no BLAKE3 hash.
        for bad in ["../x".to_string(), String::new(), "A".repeat(64), "0".repeat(63), "0".repeat(65)] {
            let damaged = BlobRef { hash: bad.clone(), ..blob.clone() };
            assert!(matches!(BlobRef::decode(&damaged.encode()), Some(Err(_))), "{bad:?}");
        }
        // At the threshold, and a small value that would read as a
        // reference, go as blobs; just below, as they are.
        assert!(is_blob(&[0; 64], 64));
        assert!(!is_blob(&[0; 63], 64));
        assert!(is_blob(&[MAGIC, b"x"].concat(), 64));
    }
}
