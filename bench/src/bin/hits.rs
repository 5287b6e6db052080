//! `hits`: herdcache's local hit and miss paths against moka and quick_cache, side by side.
//!
//! `cargo run --release -p herdcache-bench --bin hits -- [--keys N] [--secs S] [--trials T]
//! [--threads 1,2] [--quick] [--no-miss]`

fn main() {
    match herdcache_bench::Options::parse(std::env::args().skip(1)) {
        Ok(opts) => print!("{}", herdcache_bench::run(&opts)),
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
