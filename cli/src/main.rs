//! `herdcache`: the herdcache command.
//!
//! `herdcache demo` starts a small herdcache cluster inside this process, on loopback, in front
//! of a slow built-in data source, drives a Zipf load over it and prints what happened: hit
//! ratio, loads per key (once in the cluster), latency by path, per-node counters; then one node
//! leaves while the load goes on. Its nodes run on herdcache-tokio, or on several runtime
//! crates in one ring with `--runtimes`.
//!
//! `herdcache node` runs one long-lived cluster member fronting an HTTP origin (or an `echo:`
//! source), with an HTTP front end for programs not written in Rust.
//!
//! `herdcache discovery` runs a survey server speaking gopherdiscovery's protocol, for nodes
//! started with `--discovery survey://HOST:PORT?publish=HOST:PORT`.

mod demo;
mod discovery;
mod histogram;
mod logging;
mod node;
mod source;
mod table;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// herdcache: a distributed read-through cache (groupcache-like) in Rust.
#[derive(Parser, Debug)]
#[command(name = "herdcache", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a herdcache cluster in this process under a Zipf load and reports hit ratio,
    /// loads per key, latency by path and per-node counters; then one node leaves gracefully
    /// while the load goes on. `--runtimes tokio,async-std,mio` (or `all`) mixes runtimes in
    /// the ring. Needs no external service.
    Demo(demo::DemoArgs),
    /// Runs one cluster member until SIGINT or SIGTERM: keyspaces loaded from an HTTP origin
    /// (or an echo: source) on a miss, once in the cluster, and an HTTP front end
    /// (GET/PUT/DELETE /v1/{keyspace}/{key}, GET /v1/stats, GET /v1/members); members from
    /// --peers or --discovery. `herdcache node --help` for examples.
    Node(Box<node::NodeArgs>),
    /// Runs a survey server speaking gopherdiscovery's protocol (nanomsg SP over TCP) until
    /// SIGINT or SIGTERM: surveys every --poll-time on --survey, collects member ids for
    /// --survey-time, publishes the list (ids joined by `|`) on --publish when it changed;
    /// nodes join with --discovery survey://HOST:PORT?publish=HOST:PORT.
    Discovery(discovery::DiscoveryArgs),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(args).await.map_err(|error| error.to_string()),
        Command::Node(args) => {
            logging::init(args.log_level.as_deref());
            node::run(*args).await.map_err(|error| error.to_string())
        }
        Command::Discovery(args) => {
            logging::init(None);
            discovery::run(args).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herdcache: {error}");
            ExitCode::FAILURE
        }
    }
}
