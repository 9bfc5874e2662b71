//! A host with a simulated hypervisor: shoald serving guests' rings, dom0
//! on a socket, and helpers that set a guest up as a toolstack would.
#![allow(dead_code)]

use std::time::Duration;

use shoald::ring::sim::Hypervisor;
use shoald::ring::stream::{RingReader, RingWriter};

use super::asyncclient::{connect, AsyncClient, SocketClient};
use super::Shoald;

pub type Guest = AsyncClient<RingReader, RingWriter>;

pub struct Host {
    // Dropped first: shoald stops before its hypervisor goes away.
    pub shoald: Shoald,
    pub hypervisor: Hypervisor,
    pub dom0: SocketClient,
}

pub async fn host(pages: usize) -> Host {
    host_with(pages, &[]).await
}

/// A host whose shoald gets `extra` arguments.
pub async fn host_with(pages: usize, extra: &[&str]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let mut hypervisor = Hypervisor::create(&dir.path().join("hv"), pages).unwrap();
    let sim = dir.path().join("hv");
    let mut args = vec!["--sim-hypervisor".to_string(), sim.to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let shoald = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Shoald::start_in(dir, &args)
    })
    .await
    .unwrap();
    hypervisor.accept_daemon().await.unwrap();
    let dom0 = connect(&shoald.socket).await;
    Host { shoald, hypervisor, dom0 }
}

pub fn port(domid: u32) -> u32 {
    1000 + domid
}

impl Host {
    /// What a toolstack does for a new guest: its home owned by it, then
    /// INTRODUCE with page `domid` as its ring.
    pub async fn guest(&mut self, domid: u32) -> Guest {
        let home = format!("/local/domain/{domid}");
        self.dom0.mkdir(&home).await.unwrap();
        self.dom0.set_perms(&home, &[&format!("n{domid}")]).await.unwrap();
        let (input, output) = self.hypervisor.guest(domid as usize, port(domid));
        self.dom0.introduce(domid, domid as usize, port(domid)).await.unwrap();
        AsyncClient::new(input, output)
    }
}

pub async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}
