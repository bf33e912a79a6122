//! `--metrics-port`: the pool's metrics in the Prometheus text format on
//! 127.0.0.1 while the run goes on, from a tiny std-only responder.
//! `GET /metrics` answers the exposition text; anything else is a 404.

use instance_pool::PoolingInstanceAllocator;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// Binds `127.0.0.1:port` (0: any free port); the bound port.
pub fn bind(port: u16) -> std::io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    Ok((listener, port))
}

/// Answers requests on `listener` until `stop` is set.
pub fn serve(listener: TcpListener, pool: &PoolingInstanceAllocator, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                if let Err(e) = respond(conn, pool) {
                    eprintln!("metrics request failed: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => eprintln!("metrics accept failed: {e}"),
        }
    }
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

/// `GET /metrics` from this process's own server: the whole response.
pub fn scrape(port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}
