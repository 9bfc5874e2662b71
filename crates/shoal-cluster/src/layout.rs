//! Where the tree lives in etcd: the node at path `/a/b` is the etcd key
//! `PREFIX/a/b`, its value the key's value. The root is not stored (it
//! always exists). A replica keeps its own state (the etcd revision its
//! newest version holds) below a local path that is never replicated.

/// The mapping between tree paths and etcd keys, and the replica's own path.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
    local_root: String,
    max_value_bytes: usize,
    max_txn_ops: usize,
    max_request_bytes: usize,
    blob_threshold: usize,
}

/// Where a replica keeps its own state unless told otherwise: inside
/// shoald's private subtree, which xenstore clients do not see.
pub const DEFAULT_LOCAL_ROOT: &str = "/.shoald/cluster";

impl Layout {
    /// `prefix`: the etcd key prefix, without a trailing `/` (`/shoal/pool1`).
    pub fn new(prefix: &str) -> Layout {
        Layout::with_local_root(prefix, DEFAULT_LOCAL_ROOT)
    }

    pub fn with_local_root(prefix: &str, local_root: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
            local_root: local_root.to_string(),
            max_value_bytes: shoal::Options::default().max_value_bytes,
            max_txn_ops: 128,
            max_request_bytes: 1536 << 10,
            blob_threshold: 64 << 10,
        }
    }

    /// The largest value the cluster's writer puts (default: a shoal
    /// store's default limit, 1 MiB). Every replica's store must take
    /// values this large; a larger value someone else put in etcd is stored
    /// empty by every replica.
    pub fn with_max_value_bytes(mut self, max: usize) -> Layout {
        self.max_value_bytes = max;
        self
    }

    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// Values this large or larger go to etcd as references to blobs that
    /// hosts fetch from each other (default 64 KiB).
    pub fn with_blob_threshold(mut self, threshold: usize) -> Layout {
        self.blob_threshold = threshold;
        self
    }

    pub fn blob_threshold(&self) -> usize {
        self.blob_threshold
    }

    /// Where a replica notes the paths that hold blob `hash`'s bytes: one
    /// child per path, whose value is the path.
    pub fn blob_index_path(&self, hash: &str) -> String {
        format!("{}/{hash}", self.blob_index_root())
    }

    /// The entry of [`blob_index_path`](Self::blob_index_path) for `path`.
    pub fn blob_index_entry(&self, hash: &str, path: &str) -> String {
        let name = blake3::hash(path.as_bytes()).to_hex();
        format!("{}/{}", self.blob_index_path(hash), &name[..32])
    }

    pub fn blob_index_root(&self) -> String {
        format!("{}/blobs", self.local_root)
    }

    /// Where a replica keeps a blob's bytes between fetching them and
    /// applying the version that holds them (below [`staged_root`]).
    ///
    /// [`staged_root`]: Self::staged_root
    pub fn staged_path(&self, hash: &str) -> String {
        format!("{}/{hash}", self.staged_root())
    }

    pub fn staged_root(&self) -> String {
        format!("{}/staged", self.local_root)
    }

    /// The most operations etcd takes in one transaction: its
    /// `--max-txn-ops`, 128 by default. A commit makes one per node it
    /// puts or deletes by name, and two per subtree it deletes whole.
    pub fn with_max_txn_ops(mut self, max: usize) -> Layout {
        self.max_txn_ops = max;
        self
    }

    pub fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    /// The largest request etcd takes: its `--max-request-bytes`, 1.5 MiB
    /// by default. A commit's keys and values, with a little framing each,
    /// must fit in one.
    pub fn with_max_request_bytes(mut self, max: usize) -> Layout {
        self.max_request_bytes = max;
        self
    }

    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// The replica's own subtree (never taken from etcd).
    pub fn local_root(&self) -> &str {
        &self.local_root
    }

    /// Whether `prefix` is one a cluster's tree may live under: it starts
    /// with `/`, names something (not `/` alone), and has no blanks and no
    /// `#` (which the election's and the hosts' keys use). Returns it
    /// without its trailing `/`s. An empty prefix would take in every key
    /// of etcd; one without its leading `/` would escape the check that
    /// trees in one etcd are not nested.
    pub fn check_prefix(prefix: &str) -> Result<String, crate::Error> {
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || trimmed.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(crate::Error::Invalid(format!(
                "{prefix:?} is not a key prefix: it starts with '/', names something, and has no blanks or '#'"
            )));
        }
        Ok(trimmed.to_string())
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix every key of the tree starts with (`PREFIX/`).
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The etcd key of the node at `path`.
    pub fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The path a key stands for, if it is one the replica applies: below
    /// the prefix, a valid path, not the root, and not the replica's own
    /// subtree. Every replica skips the same keys, so they agree.
    pub fn path<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let path = std::str::from_utf8(rest).ok()?;
        if path == "/" || !path.starts_with('/') || self.is_local(path) || shoal::path::validate(path).is_err() {
            return None;
        }
        Some(path)
    }

    /// Whether `path` is in the replica's own subtree.
    pub fn is_local(&self, path: &str) -> bool {
        path == self.local_root || path.strip_prefix(self.local_root.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }

    /// The election of the cluster's writer: `PREFIX#writer`, beside the
    /// tree's keys, not among them.
    pub fn election_name(&self) -> String {
        format!("{}#writer", self.prefix)
    }

    /// The key of a host's status (`PREFIX#hosts/HOST`); with `""`, the
    /// prefix of every host's.
    pub fn host_key(&self, host: &str) -> String {
        format!("{}#hosts/{host}", self.prefix)
    }

    /// The path of the revision at which a replica last loaded the whole
    /// tree: the version that holds it there collapsed the revisions before
    /// it, so the tree as of those is not known from this replica.
    pub fn reload_path(&self) -> String {
        format!("{}/reloaded", self.local_root)
    }

    /// The path of what a replica replicates (the etcd cluster and the
    /// prefix), written when it loads: a store is a replica of one tree.
    pub fn source_path(&self) -> String {
        format!("{}/source", self.local_root)
    }

    /// The key, below the replicas' own subtree, that marks a revision
    /// every replica's watch delivers and none applies.
    pub fn sync_marker_path(&self) -> String {
        format!("{}/sync", self.local_root)
    }

    /// The path of the revision a replica's version holds.
    pub fn revision_path(&self) -> String {
        format!("{}/revision", self.local_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_paths_map_both_ways() {
        let l = Layout::new("/shoal/pool/");
        assert_eq!(l.key_prefix(), "/shoal/pool/");
        assert_eq!(l.key("/a/b"), "/shoal/pool/a/b");
        assert_eq!(l.path(b"/shoal/pool/a/b"), Some("/a/b"));
        // Not below the prefix, the root, a sibling prefix, bad paths.
        assert_eq!(l.path(b"/shoal/other/a"), None);
        assert_eq!(l.path(b"/shoal/pool/"), None);
        assert_eq!(l.path(b"/shoal/pool"), None);
        assert_eq!(l.path(b"/shoal/poolx/a"), None);
        assert_eq!(l.path(b"/shoal/pool//a"), None);
        assert_eq!(l.path(b"/shoal/pool/a/"), None);
        assert_eq!(l.path(b"/shoal/pool/\xff"), None);
        // The replica's own state is never taken from etcd.
        assert_eq!(l.path(b"/shoal/pool/.shoald/cluster/revision"), None);
        assert_eq!(l.path(b"/shoal/pool/.shoald/cluster"), None);
        assert_eq!(l.path(b"/shoal/pool/.shoald/clusterx"), Some("/.shoald/clusterx"));
        assert_eq!(l.path(b"/shoal/pool/.shoald/perms/a"), Some("/.shoald/perms/a"));
        assert_eq!(l.revision_path(), "/.shoald/cluster/revision");
        assert_eq!(l.election_name(), "/shoal/pool#writer");
        assert!(!l.election_name().starts_with(&l.key_prefix()));
        assert_eq!(l.host_key("h1"), "/shoal/pool#hosts/h1");
        assert!(!l.host_key("h1").starts_with(&l.key_prefix()));
    }
}
