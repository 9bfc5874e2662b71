//! Reads one value as whoever runs it: `read-once STORE PATH`. Prints
//! `value <bytes as text>`, or `error <message>` and exits 1.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, path) = (args.get(1).expect("store dir"), args.get(2).expect("path"));
    let read = shoal::Reader::open(dir).and_then(|reader| {
        let snapshot = reader.snapshot()?;
        Ok(snapshot.get(path)?.map(|v| String::from_utf8_lossy(v).into_owned()))
    });
    match read {
        Ok(value) => println!("value {}", value.unwrap_or_default()),
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    }
}
