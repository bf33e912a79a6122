//! Serves the pool's metrics in the Prometheus text format on 127.0.0.1
//! while a density workload runs, with a tiny std-only HTTP responder.
//!
//! `cargo run --release --example metrics_server -- [--port 9464] [--seconds 30] [--threads 2] [--scrape]`
//!
//! `GET /metrics` answers the exposition text; anything else is a 404.
//! `--scrape` fetches `/metrics` once from itself after a second and prints
//! it. The server stops with the workload.

use instance_pool::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("bad value for {name}")))
        .unwrap_or(default)
}

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
    let port: u16 = arg("--port", 9464);
    let seconds: f64 = arg("--seconds", 30.0);
    let threads: usize = arg("--threads", 2);
    let self_scrape = std::env::args().any(|a| a == "--scrape");

    let mut config = PoolingConfig::default();
    config
        .total_instances(64)
        .total_memories(64)
        .total_tables(64)
        .max_memory_size(64 << 20)
        .memory_keep_resident(1 << 20);
    let pool = PoolingInstanceAllocator::new(&config)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(Error::Os)?;
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
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, layout) = (pool.clone(), layout.clone());
            thread::spawn(move || -> Result<u64> {
                let mut held = std::collections::VecDeque::new();
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut store = Store::new(&pool, StoreLimits::default());
                    store.limiter(|l| l);
                    let i = store.instantiate_timeout(&layout, Duration::from_millis(50))?;
                    let m = i.memory(&store, 0).unwrap();
                    m.grow(&mut store, 1)?;
                    m.data_mut(&mut store)[70_000] = t as u8;
                    held.push_back(store);
                    if held.len() > 40 {
                        held.pop_front();
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();

    if self_scrape {
        thread::sleep(Duration::from_secs(1).min(Duration::from_secs_f64(seconds / 2.0)));
        println!("{}", scrape(port).map_err(Error::Os)?);
    }
    let mut total = 0;
    for w in workers {
        match w.join().expect("worker panicked") {
            Ok(n) => total += n,
            Err(Error::PoolExhausted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server panicked");
    println!(
        "{total} instantiations in {seconds} s; final metrics:\n{}",
        pool.metrics()
    );
    Ok(())
}
