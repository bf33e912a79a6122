//! An HTTP server on 127.0.0.1 that runs a real wasm module per request
//! with Wasmtime, on memories and fiber stacks from this crate's pools, and
//! a load mode comparing it with Wasmtime's own pooling allocator.
//!
//! Needs the `wasmtime-examples` feature:
//!
//! ```sh
//! cargo run --release --features wasmtime-examples --example serve -- --seconds 30
//! curl -d 'hello' 'http://127.0.0.1:8080/run/alice?grow=1'
//! curl http://127.0.0.1:8080/metrics
//! cargo run --release --features wasmtime-examples --example serve -- --load
//! ```
//!
//! Every request gets a fresh `wasmtime::Store` whose `StoreLimits` allow
//! the tenant `--memory-limit` bytes of memory, an instance of the module
//! (compiled once, from `handler.wat` with a 256 KiB data segment that
//! `backend.rs` adds) on a pooled memory, and its calls on a pooled fiber
//! stack (`call_async`). On the crate's pool the module is a
//! `PooledModule`: its data is a copy-on-write memory image mapped into
//! the slot (already there in a warm slot), and an instantiation waits in
//! the pool's admission queue, up to a deadline, when every memory slot is
//! taken. The module upper-cases the body, writes over four of its data
//! pages, tries `memory.grow` by `grow` pages (-1 past the limit), and
//! checks that it sees exactly its image and zeroes: nothing a previous
//! tenant wrote.
//!
//! `--load` starts the server once per backend, sends `--requests`
//! requests from `--connections` keep-alive connections over loopback, and
//! prints requests/s and latency percentiles for all from one run. Then an
//! overload run on the crate's backend: a quarter as many requests from
//! three times `--connections` connections on `--connections` memory
//! slots, each instantiation waiting for a slot up to `--deadline`. It
//! fails (exit status 1) on any error, any request answered after its
//! deadline, a leaked bit or a slot not returned.

mod backend;
mod chart;
#[path = "../common/mod.rs"]
#[allow(dead_code, reason = "the serve example parses no page multiples")]
mod common;
mod http;
#[path = "../common/lines.rs"]
mod lines;
mod load;

use backend::{Backend, Kind};
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;

/// Runs wasm per HTTP request on pooled memories and stacks.
#[derive(Debug, Parser)]
#[command(name = "serve")]
struct Args {
    /// Port on 127.0.0.1 to serve on (0: any free port, printed)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// How long the server runs before it stops by itself
    #[arg(long, value_name = "S", default_value = "30", value_parser = common::parse_seconds)]
    seconds: Duration,
    /// What the server runs on: `pool` (this crate), `pool-markers` (the
    /// same on guard markers), `wasmtime` (Wasmtime's own pooling allocator)
    /// or `ondemand` (Wasmtime's default, no pool)
    #[arg(long, default_value = "pool",
          value_parser = ["pool", "pool-markers", "wasmtime", "ondemand"])]
    backend: String,
    /// Compare both backends under load instead of serving
    #[arg(long)]
    load: bool,
    /// Requests per backend in the load mode (after a tenth as warm-up)
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    requests: u64,
    /// Concurrent keep-alive connections in the load mode
    #[arg(long, value_name = "K", default_value_t = 8)]
    connections: usize,
    /// Longest a backend's load may run
    #[arg(long, value_name = "S", default_value = "60", value_parser = common::parse_seconds)]
    max_seconds: Duration,
    /// Memory slots and stacks of each backend
    #[arg(long, default_value_t = 64)]
    slots: u32,
    /// Each tenant's StoreLimits memory size (K/M suffixes ok)
    #[arg(long, value_name = "BYTES", default_value = "512K", value_parser = common::parse_bytes)]
    memory_limit: usize,
    /// Closes a connection that sends no whole request head for this long
    /// (after it opens, or after its last response), or not all of a
    /// request's body this long after its head (answered 408)
    #[arg(long, value_name = "S", default_value = "10", value_parser = common::parse_seconds)]
    header_timeout: Duration,
    /// With --load: the overload run's deadline (3x --connections
    /// concurrent requests on --connections memory slots): the longest an
    /// instantiation waits for a slot, and a request may take
    #[arg(long, value_name = "S", default_value = "1", value_parser = common::parse_seconds)]
    deadline: Duration,
    /// With --load: also draw every run's latency percentiles to this
    /// SVG file
    #[arg(long, value_name = "FILE.svg")]
    out: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.connections == 0 || u64::try_from(args.connections)? > args.requests.max(1) {
        return Err("--connections must be between 1 and --requests".into());
    }
    if (args.slots as usize) < args.connections {
        return Err(format!(
            "--slots ({}) must be at least --connections ({}): each connection's request holds a memory and a stack",
            args.slots, args.connections
        )
        .into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.load {
        return runtime.block_on(load::compare(&args));
    }
    let kind = match args.backend.as_str() {
        "pool" => Kind::InstancePool,
        "pool-markers" => Kind::InstancePoolMarkers,
        "wasmtime" => Kind::WasmtimePooling,
        _ => Kind::WasmtimeOnDemand,
    };
    runtime.block_on(serve(&args, kind))
}

async fn serve(args: &Args, kind: Kind) -> Result<(), Box<dyn std::error::Error>> {
    let backend = Arc::new(Backend::new(kind, args.slots, args.memory_limit)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    println!(
        "serving {} on http://{addr} for {:?}: POST /run/<tenant>?grow=N, GET /metrics",
        kind.name(),
        args.seconds
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let deadline = tokio::time::Instant::now() + args.seconds;
    http::serve(
        listener,
        backend.clone(),
        deadline,
        stop_rx,
        args.header_timeout,
    )
    .await;
    let requests = backend.requests.load(std::sync::atomic::Ordering::Relaxed);
    let leaked = backend.leaked.load(std::sync::atomic::Ordering::Relaxed);
    println!("stopped after {requests} requests; bits leaked between tenants: {leaked}");
    Ok(())
}
