//! shoald: the daemon that owns a shoal store's writer and serves the
//! xenstore protocol, so that Xen's tools and guests use shoal unmodified
//! while processes on the host keep reading the store in place.

pub mod client;
pub mod ring;
pub mod server;
pub mod wire;
pub mod xs;
