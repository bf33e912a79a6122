//! `--load`: the server once per backend on 127.0.0.1, N requests from K
//! keep-alive connections, and one table comparing requests/s and latency.

use crate::Args;
use crate::backend::{Backend, Kind, SLOT};
use crate::http::{self, Client};
use hdrhistogram::Histogram;
use hyper::Method;
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// What one backend's measured phase gave.
struct Run {
    kind: Kind,
    ok: u64,
    errors: u64,
    /// First error seen, for the summary.
    first_error: Option<String>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    leaked: u64,
    refused_grows: u64,
    /// Slots and stacks still held after the load (the crate's backend).
    held_after: Option<(u32, u32)>,
    /// `/metrics` lines about memories and stacks, scraped under load.
    scraped: Vec<String>,
}

pub async fn compare(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "load: {} requests per backend (+{} warm-up) from {} connections, slots of {}, tenants limited to {} of memory",
        args.requests,
        args.requests / 10,
        args.connections,
        crate::common::fmt_bytes(SLOT as f64),
        crate::common::fmt_bytes(args.memory_limit as f64),
    );
    let mut runs = Vec::new();
    for kind in [
        Kind::InstancePool,
        Kind::WasmtimePooling,
        Kind::WasmtimeOnDemand,
    ] {
        runs.push(one_backend(args, kind).await?);
    }
    summary(&runs);
    if let Some(path) = &args.out {
        let lines: Vec<_> = runs
            .iter()
            .map(|r| (r.kind.name(), &r.latency_us))
            .collect();
        let title = format!(
            "{} requests from {} connections, one run",
            args.requests, args.connections
        );
        match crate::chart::write_chart(path, &lines, &title) {
            Ok(()) => println!("latency chart: {}", path.display()),
            Err(e) => eprintln!("chart: {e}"),
        }
    }
    let clean = runs
        .iter()
        .all(|r| r.errors == 0 && r.leaked == 0 && r.held_after.is_none_or(|h| h == (0, 0)));
    if clean {
        Ok(())
    } else {
        Err("errors, leaked bits or unreturned slots: see the table".into())
    }
}

async fn one_backend(args: &Args, kind: Kind) -> Result<Run, Box<dyn std::error::Error>> {
    let backend = Arc::new(Backend::new(kind, args.slots, args.memory_limit)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    // The warm-up and the measured phase may each take `max_seconds`.
    let deadline = Instant::now() + 2 * args.max_seconds + Duration::from_secs(5);
    let server = tokio::spawn(http::serve(
        listener,
        backend.clone(),
        deadline,
        stop_rx,
        args.header_timeout,
    ));

    let warm_up = args.requests / 10;
    let _ = drive(addr, warm_up, args, None).await;
    let bar = ProgressBar::new(args.requests).with_style(
        ProgressStyle::with_template("{msg:28} {bar:40} {pos}/{len} {per_sec}")
            .expect("a valid template"),
    );
    bar.set_message(kind.name());
    let requests_before = backend.requests.load(Relaxed);
    let (leaked_before, refused_before) = (
        backend.leaked.load(Relaxed),
        backend.refused_grows.load(Relaxed),
    );
    let started = Instant::now();
    let (latency_us, errors, first_error) = drive(addr, args.requests, args, Some(&bar)).await;
    let elapsed = started.elapsed();
    bar.finish();
    let scraped = scrape(addr).await;
    let _ = stop.send(true);
    let _ = server.await;
    let ok = backend.requests.load(Relaxed) - requests_before;
    let held_after = backend.pools.as_ref().map(|(pool, stacks)| {
        (
            pool.metrics().memories_in_use,
            stacks.metrics().stacks_in_use,
        )
    });
    Ok(Run {
        kind,
        ok,
        errors,
        first_error,
        elapsed,
        latency_us,
        leaked: backend.leaked.load(Relaxed) - leaked_before,
        refused_grows: backend.refused_grows.load(Relaxed) - refused_before,
        held_after,
        scraped,
    })
}

/// Sends `total` requests from `args.connections` connections, stopping at
/// `args.max_seconds`. Each request's body and `grow` vary with its
/// number: a quarter of them ask more memory than the tenant may have.
async fn drive(
    addr: SocketAddr,
    total: u64,
    args: &Args,
    bar: Option<&ProgressBar>,
) -> (Histogram<u64>, u64, Option<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + args.max_seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let next = next.clone();
        let bar = bar.cloned();
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut errors, mut first) = (0u64, None);
            let mut client = match Client::connect(addr).await {
                Ok(c) => c,
                Err(e) => return (hist, 1, Some(format!("connect: {e}"))),
            };
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= total || Instant::now() >= deadline {
                    break;
                }
                let body = format!("hello from tenant {}, request {n}", n % 100);
                let path = format!("/run/t{}?grow={}", n % 100, n % 4);
                let sent = Instant::now();
                let result = client
                    .send(Method::POST, &path, Bytes::from(body.clone()))
                    .await;
                let took = sent.elapsed();
                match check(result, &body) {
                    Ok(()) => {
                        let _ = hist.record((took.as_micros() as u64).max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                        // A broken connection: make a new one.
                        match Client::connect(addr).await {
                            Ok(c) => client = c,
                            Err(_) => break,
                        }
                    }
                }
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
            (hist, errors, first)
        });
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut errors, mut first) = (0, None);
    while let Some(done) = tasks.join_next().await {
        let Ok((hist, e, f)) = done else {
            errors += 1;
            continue;
        };
        let _ = all.add(&hist);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    (all, errors, first)
}

/// A 200 whose output is the body upper-cased and which saw nothing of
/// another tenant.
fn check(result: Result<(hyper::StatusCode, Bytes), String>, body: &str) -> Result<(), String> {
    let (status, bytes) = result?;
    if status != hyper::StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let reply: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if reply["output"] != body.to_ascii_uppercase().as_str() {
        return Err(format!("wrong output: {reply}"));
    }
    if reply["leaked_bits"] != 0 {
        return Err(format!("a tenant saw another's bytes: {reply}"));
    }
    Ok(())
}

/// `/metrics` lines about memories and stacks in use and handed out.
async fn scrape(addr: SocketAddr) -> Vec<String> {
    let Ok(mut client) = Client::connect(addr).await else {
        return vec!["(scrape: cannot connect)".into()];
    };
    match client.send(Method::GET, "/metrics", Bytes::new()).await {
        Ok((_, body)) => String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.contains("resource=\"memory\"")
                    && (l.contains("in_use") || l.contains("acquisitions"))
                    || l.starts_with("instance_pool_stack")
                    || l.starts_with("serve_")
            })
            .map(str::to_string)
            .collect(),
        Err(e) => vec![format!("(scrape: {e})")],
    }
}

fn summary(runs: &[Run]) {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    println!();
    println!(
        "{:<28} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "backend",
        "requests",
        "errors",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "leaked",
        "grow -1"
    );
    for r in runs {
        let rate = r.ok as f64 / r.elapsed.as_secs_f64();
        println!(
            "{:<28} {:>9} {:>7} {:>10.0} {:>9} {:>9} {:>9} {:>7} {:>9}",
            r.kind.name(),
            r.ok,
            r.errors,
            rate,
            us(&r.latency_us, 0.5),
            us(&r.latency_us, 0.99),
            us(&r.latency_us, 0.999),
            r.leaked,
            r.refused_grows,
        );
    }
    if let [a, b, ..] = runs {
        let rate = |r: &Run| r.ok as f64 / r.elapsed.as_secs_f64();
        let ratio = |q| us(&a.latency_us, q) as f64 / us(&b.latency_us, q).max(1) as f64;
        println!(
            "instance-pool / wasmtime pooling: req/s {:.2}x, p50 {:.2}x, p99 {:.2}x (latency: lower is better)",
            rate(a) / rate(b),
            ratio(0.5),
            ratio(0.99)
        );
    }
    for r in runs {
        if let Some(e) = &r.first_error {
            println!("{}: first error: {e}", r.kind.name());
        }
        if let Some((memories, stacks)) = r.held_after {
            println!(
                "{}: after the load {memories} memories and {stacks} stacks held (all returned: {})",
                r.kind.name(),
                memories == 0 && stacks == 0
            );
        }
    }
    if let Some(r) = runs.iter().find(|r| r.held_after.is_some()) {
        println!("/metrics of {} right after the load:", r.kind.name());
        for line in &r.scraped {
            println!("  {line}");
        }
    }
}
