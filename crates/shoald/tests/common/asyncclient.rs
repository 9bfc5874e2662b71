//! The library's async client, with a connect that panics (tests only).
#![allow(dead_code)]

pub use shoald::client::{AsyncClient, SocketClient};

pub async fn connect(socket: &std::path::Path) -> SocketClient {
    shoald::client::connect(socket).await.expect("connect to shoald")
}
