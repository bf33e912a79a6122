//! Serves the pool's metrics in the Prometheus text format on 127.0.0.1
//! while a density workload runs, with a tiny std-only HTTP responder.
//!
//! `cargo run --release --example metrics_server -- [--port 9464] [--seconds 30] [--threads 2] [--keep-resident 1M] [--scrape]`
//!
//! `GET /metrics` answers the exposition text; anything else is a 404.
//! `--scrape` fetches `/metrics` once from itself after a second and prints
//! it. The server stops with the workload.

mod common;

use clap::Parser;
use instance_pool::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Serves the pool's metrics (Prometheus text format) on 127.0.0.1 while
/// a workload of short-lived tenants runs.
#[derive(Debug, Parser)]
#[command(name = "metrics_server")]
struct Args {
    /// Port on 127.0.0.1 (0: any free port, printed at the start)
    #[arg(long, default_value_t = 9464)]
    port: u16,
    /// How long the workload (and the server) runs, in seconds
    #[arg(long, value_name = "S", default_value = "30", value_parser = common::parse_seconds)]
    seconds: Duration,
    /// Workload threads
    #[arg(long, value_name = "N", default_value_t = 2)]
    threads: usize,
    /// memory_keep_resident of the pool (K/M/G suffixes ok; a multiple of
    /// the host page)
    #[arg(long, value_name = "BYTES", default_value = "1M",
          value_parser = common::parse_page_multiple)]
    keep_resident: usize,
    /// Fetch /metrics once from this server after a second and print it
    #[arg(long)]
    scrape: bool,
}

/// Memory slots of the pool, and their size.
const SLOTS: u32 = 64;
const SLOT_BYTES: usize = 64 << 20;

fn respond(mut conn: TcpStream, pool: &PoolingInstanceAllocator) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request_line = String::new();
    BufReader::new(&conn).read_line(&mut request_line)?;
    let (status, content_type, body) = if request_line.starts_with("GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            pool.metrics().to_string(),
        )
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn scrape(port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let seconds = args.seconds.as_secs_f64();

    let mut config = PoolingConfig::default();
    config
        .total_instances(SLOTS)
        .total_memories(SLOTS)
        .total_tables(SLOTS)
        .max_memory_size(SLOT_BYTES)
        .memory_keep_resident(args.keep_resident);
    let pool = PoolingInstanceAllocator::new(&config)?;
    let listener = TcpListener::bind(("127.0.0.1", args.port)).map_err(Error::Os)?;
    let port = listener.local_addr().map_err(Error::Os)?.port();
    listener.set_nonblocking(true).map_err(Error::Os)?;
    println!("serving http://127.0.0.1:{port}/metrics for {seconds} s");

    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (pool, stop) = (pool.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        if let Err(e) = respond(conn, &pool) {
                            eprintln!("request failed: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => eprintln!("accept failed: {e}"),
                }
            }
        })
    };

    // The workload: short-lived tenants, some held a while so the pool
    // fills and waiters show up in the metrics.
    let image = MemoryImage::new(&[1u8; 4096])?;
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, Some(160)), image)
        .table(TableType::new(10, Some(100)));
    let end = Instant::now() + args.seconds;
    let threads = args.threads.max(1);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, layout) = (pool.clone(), layout.clone());
            thread::spawn(move || -> Result<u64> {
                let mut held = std::collections::VecDeque::new();
                let mut n = 0u64;
                // Up to this thread's share of the pool: together the threads
                // keep it nearly full. Each gives up its oldest store before
                // asking for a new one, so they never wait on each other
                // for long (threads that held more than their share could
                // all wait at once, each for a release only another waiter
                // would make).
                let share = (SLOTS as usize / threads).max(1);
                while Instant::now() < end {
                    if held.len() >= share {
                        held.pop_front();
                    }
                    let mut store = Store::new(&pool, StoreLimits::default());
                    store.limiter(|l| l);
                    let i = match store.instantiate_timeout(&layout, Duration::from_millis(50)) {
                        Err(Error::PoolExhausted { .. }) => {
                            held.pop_front();
                            continue;
                        }
                        r => r?,
                    };
                    let m = i.memory(&store, 0).unwrap();
                    m.grow(&mut store, 1)?;
                    m.data_mut(&mut store)[70_000] = t as u8;
                    held.push_back(store);
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();

    if args.scrape {
        thread::sleep(Duration::from_secs(1).min(args.seconds / 2));
        println!("{}", scrape(port).map_err(Error::Os)?);
    }
    let mut total = 0;
    for w in workers {
        total += w.join().expect("worker panicked")?;
    }
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server panicked");
    println!(
        "{total} instantiations in {seconds} s on {SLOTS} slots of {} (keep-resident {}); final metrics:\n{}",
        common::fmt_bytes(SLOT_BYTES as f64),
        common::fmt_bytes(args.keep_resident as f64),
        pool.metrics()
    );
    Ok(())
}
