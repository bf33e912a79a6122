//! `--load`: the server once per backend on 127.0.0.1, N requests from K
//! keep-alive connections, and one table comparing requests/s and latency;
//! then an overload run on the crate's backend: three times as many
//! connections as memory slots, each instantiation waiting in the pool's
//! admission queue up to `--deadline` instead of failing.

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

/// One measured phase: which backend, its pools, the load.
struct Setup {
    kind: Kind,
    /// The row's name in the table and the chart.
    name: String,
    slots: u32,
    stacks: u32,
    connections: usize,
    requests: u64,
    /// The longest an instantiation waits for a slot, and a request may
    /// take before it counts as late; `None`: the backend's default wait,
    /// nothing counted.
    deadline: Option<Duration>,
}

/// What one backend's measured phase gave.
struct Run {
    name: String,
    ok: u64,
    errors: u64,
    /// Requests served after their deadline (overload run).
    late: Option<u64>,
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
        "load: {} requests per backend (+{} warm-up) from {} connections, slots of {}, tenants limited to {} of memory, 256 KiB of data per instance",
        args.requests,
        args.requests / 10,
        args.connections,
        crate::common::fmt_bytes(SLOT as f64),
        crate::common::fmt_bytes(args.memory_limit as f64),
    );
    let mut runs = Vec::new();
    // The run that goes first pays for warming the process up (its
    // allocator, the loopback path, the clock), whatever its own warm-up:
    // the two pools compared go second and third.
    for kind in [
        Kind::WasmtimeOnDemand,
        Kind::InstancePool,
        Kind::WasmtimePooling,
    ] {
        let setup = Setup {
            kind,
            name: kind.name().into(),
            slots: args.slots,
            stacks: args.slots,
            connections: args.connections,
            requests: args.requests,
            deadline: None,
        };
        runs.push(one_backend(args, &setup).await?);
    }
    // As many slots as the comparison's connections, three times as many
    // connections, a quarter of the requests.
    let slots = u32::try_from(args.connections)?;
    let connections = 3 * args.connections;
    let overload = Setup {
        kind: Kind::InstancePool,
        name: format!("overload: {connections} conns, {slots} slots"),
        slots,
        stacks: u32::try_from(connections)?,
        connections,
        requests: (args.requests / 4).max(connections as u64),
        deadline: Some(args.deadline),
    };
    println!(
        "overload: {} requests from {connections} connections on {slots} memory slots of the crate's pool, each waiting at most {:?} for one",
        overload.requests, args.deadline
    );
    runs.push(one_backend(args, &overload).await?);
    summary(&runs, args.deadline);
    if let Some(path) = &args.out {
        let lines: Vec<_> = runs
            .iter()
            .map(|r| (r.name.as_str(), &r.latency_us))
            .collect();
        let title = format!(
            "{} requests from {} connections, one run (overload: {} from {connections} on {slots} slots)",
            args.requests, args.connections, overload.requests
        );
        match crate::chart::write_chart(path, &lines, &title) {
            Ok(()) => println!("latency chart: {}", path.display()),
            Err(e) => eprintln!("chart: {e}"),
        }
    }
    let clean = runs.iter().all(|r| {
        r.errors == 0
            && r.late.unwrap_or(0) == 0
            && r.leaked == 0
            && r.held_after.is_none_or(|h| h == (0, 0))
    });
    if clean {
        Ok(())
    } else {
        Err("errors, late requests, leaked bits or unreturned slots: see the table".into())
    }
}

async fn one_backend(args: &Args, setup: &Setup) -> Result<Run, Box<dyn std::error::Error>> {
    let mut backend =
        Backend::with_stacks(setup.kind, setup.slots, setup.stacks, args.memory_limit)?;
    if let Some(deadline) = setup.deadline {
        backend.admission_wait = deadline;
    }
    let backend = Arc::new(backend);
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

    let warm_up = Setup {
        name: setup.name.clone(),
        requests: setup.requests / 10,
        ..*setup
    };
    let _ = drive(addr, &warm_up, args.max_seconds, None).await;
    let bar = ProgressBar::new(setup.requests).with_style(
        ProgressStyle::with_template("{msg:32} {bar:40} {pos}/{len} {per_sec}")
            .expect("a valid template"),
    );
    bar.set_message(setup.name.clone());
    let requests_before = backend.requests.load(Relaxed);
    let (leaked_before, refused_before) = (
        backend.leaked.load(Relaxed),
        backend.refused_grows.load(Relaxed),
    );
    let started = Instant::now();
    let driven = drive(addr, setup, args.max_seconds, Some(&bar)).await;
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
        name: setup.name.clone(),
        ok,
        errors: driven.errors,
        late: setup.deadline.map(|_| driven.late),
        first_error: driven.first_error,
        elapsed,
        latency_us: driven.latency_us,
        leaked: backend.leaked.load(Relaxed) - leaked_before,
        refused_grows: backend.refused_grows.load(Relaxed) - refused_before,
        held_after,
        scraped,
    })
}

/// What the clients saw.
struct Driven {
    latency_us: Histogram<u64>,
    errors: u64,
    /// Answered after `setup.deadline`.
    late: u64,
    first_error: Option<String>,
}

/// Sends `setup.requests` requests from `setup.connections` connections,
/// stopping after `max_seconds`. Each request's body and `grow` vary with
/// its number: a quarter of them ask more memory than the tenant may have.
async fn drive(
    addr: SocketAddr,
    setup: &Setup,
    max_seconds: Duration,
    bar: Option<&ProgressBar>,
) -> Driven {
    let (total, late_after) = (setup.requests, setup.deadline.unwrap_or(Duration::MAX));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + max_seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..setup.connections {
        let next = next.clone();
        let bar = bar.cloned();
        tasks.spawn(async move {
            let mut seen = Driven {
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
                errors: 0,
                late: 0,
                first_error: None,
            };
            let mut client = match Client::connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    seen.errors = 1;
                    seen.first_error = Some(format!("connect: {e}"));
                    return seen;
                }
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
                        let _ = seen.latency_us.record((took.as_micros() as u64).max(1));
                        seen.late += u64::from(took > late_after);
                    }
                    Err(e) => {
                        seen.errors += 1;
                        seen.first_error.get_or_insert(e);
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
            seen
        });
    }
    let mut all = Driven {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        errors: 0,
        late: 0,
        first_error: None,
    };
    while let Some(done) = tasks.join_next().await {
        let Ok(seen) = done else {
            all.errors += 1;
            continue;
        };
        let _ = all.latency_us.add(&seen.latency_us);
        all.errors += seen.errors;
        all.late += seen.late;
        if all.first_error.is_none() {
            all.first_error = seen.first_error;
        }
    }
    all
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

/// `/metrics` lines about memories and stacks in use and handed out, and
/// how instantiations got their images.
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
                    || l.starts_with("instance_pool_images_total")
                    || l.starts_with("instance_pool_stack")
                    || l.starts_with("serve_")
            })
            .map(str::to_string)
            .collect(),
        Err(e) => vec![format!("(scrape: {e})")],
    }
}

fn summary(runs: &[Run], deadline: Duration) {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    let rate = |r: &Run| r.ok as f64 / r.elapsed.as_secs_f64();
    println!();
    println!(
        "{:<32} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}",
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
        println!(
            "{:<32} {:>9} {:>7} {:>10.0} {:>9} {:>9} {:>9} {:>7} {:>9}",
            r.name,
            r.ok,
            r.errors,
            rate(r),
            us(&r.latency_us, 0.5),
            us(&r.latency_us, 0.99),
            us(&r.latency_us, 0.999),
            r.leaked,
            r.refused_grows,
        );
    }
    let named = |kind: Kind| runs.iter().find(|r| r.name == kind.name());
    if let (Some(a), Some(b)) = (named(Kind::InstancePool), named(Kind::WasmtimePooling)) {
        let ratio = |q| us(&a.latency_us, q) as f64 / us(&b.latency_us, q).max(1) as f64;
        println!(
            "instance-pool / wasmtime pooling: req/s {:.2}x, p50 {:.2}x, p99 {:.2}x (latency: lower is better)",
            rate(a) / rate(b),
            ratio(0.5),
            ratio(0.99)
        );
    }
    for r in runs.iter().filter(|r| r.late.is_some()) {
        let late = r.late.unwrap_or(0);
        println!(
            "{}: {} served, {} errors, {late} past the {deadline:?} deadline (all served in time: {}); {:.0} req/s, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            r.name,
            r.ok,
            r.errors,
            r.errors == 0 && late == 0,
            rate(r),
            us(&r.latency_us, 0.5),
            us(&r.latency_us, 0.99),
            us(&r.latency_us, 0.999),
            r.latency_us.max(),
        );
    }
    for r in runs {
        if let Some(e) = &r.first_error {
            println!("{}: first error: {e}", r.name);
        }
        if let Some((memories, stacks)) = r.held_after {
            println!(
                "{}: after the load {memories} memories and {stacks} stacks held (all returned: {})",
                r.name,
                memories == 0 && stacks == 0
            );
        }
    }
    if let Some(r) = runs.iter().find(|r| r.held_after.is_some()) {
        println!("/metrics of {} right after the load:", r.name);
        for line in &r.scraped {
            println!("  {line}");
        }
    }
}
