//! `kvstore`: a distributed key-value store's guided demo (default), interactive REPL
//! (`--interactive`, or `--connect HOST:PORT` as a client of a server) and Redis-protocol
//! server (`kvstore serve`), on the `kv-cluster` coordinator.

mod args;
mod bench;
mod client;
mod cmd;
mod demo;
mod duration;
mod fd_limit;
mod node;
mod node_change;
mod node_commands;
mod node_meta;
mod node_rate;
mod open;
mod output;
mod repl;
mod serve;
mod session;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of the system allocator: the server allocates per request (values read
/// from the log, reply buffers, per-batch vectors), and glibc's malloc and free took about a
/// fifth of `kvstore serve`'s time under pipelined `GET`s (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = args::Args::parse();
    let result = match &args.command {
        Some(args::Command::Serve(serve)) => serve::run(serve).map(|()| true),
        None if args.interactive || args.connect.is_some() => repl::run(&args),
        None => demo::run(&args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Nowhere left to report a failure to write the report itself.
            let _ = writeln!(std::io::stderr(), "kvstore: {e:#}");
            ExitCode::FAILURE
        }
    }
}
