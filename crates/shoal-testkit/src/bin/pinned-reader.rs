//! A reader that pins one version and then waits to be killed:
//! `pinned-reader STORE`. Prints `pinned generation=G version=V`.

fn main() {
    let dir = std::env::args().nth(1).expect("store dir");
    let reader = shoal::Reader::open(&dir).expect("open reader");
    let snap = reader.snapshot().expect("snapshot");
    println!("pinned generation={} version={}", snap.generation(), snap.version());
    loop {
        // Keep reading the pinned version: it must stay intact.
        assert!(snap.get("/").expect("get").is_some());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
