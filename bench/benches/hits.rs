//! `cargo bench -p herdcache-bench --bench hits [-- --keys N --secs S --trials T --quick]`: the
//! same comparison as the `hits` binary.

fn main() {
    match herdcache_bench::Options::parse(std::env::args().skip(1)) {
        Ok(opts) => print!("{}", herdcache_bench::run(&opts)),
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
