//! `herdcache`: the herdcache command (the subcommands follow).

#![allow(dead_code)] // The building blocks land before the demo that uses them.

mod histogram;
mod table;
mod zipf;

use clap::Parser;

/// herdcache: a distributed read-through cache (groupcache-like) in Rust.
#[derive(Parser, Debug)]
#[command(name = "herdcache", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
