//! The serve example's HTTP server (`examples/serve/http.rs`): a client that
//! sends no whole request head within the header timeout, on a fresh
//! connection or between keep-alive requests, is disconnected, so idle
//! clients cannot hold the server's connection places.

#[path = "../examples/serve/backend.rs"]
#[allow(dead_code, reason = "the test needs the backend only to serve")]
mod backend;
#[path = "../examples/serve/http.rs"]
#[allow(dead_code, reason = "the test drives the server with raw sockets")]
mod http;

use backend::{Backend, Kind};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Generous: the connection limit the server had alone is 120 s.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

/// A connection to `addr` that has sent `head`.
async fn connect(addr: std::net::SocketAddr, head: &[u8]) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut sent = 0;
    while sent < head.len() {
        stream.writable().await.unwrap();
        match stream.try_write(&head[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    stream
}

/// Reads until the server closes the connection; what it sent, or `None`
/// if it was still open after `CLOSED_WITHIN`.
async fn until_closed(stream: TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(CLOSED_WITHIN, async {
        let mut buf = [0; 4096];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    });
    read.await.ok().map(|()| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_no_request_head_are_disconnected_after_the_header_timeout() {
    let backend = Arc::new(Backend::new(Kind::InstancePool, 2, 256 << 10).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let deadline = Instant::now() + 4 * CLOSED_WITHIN;
    let server = tokio::spawn(http::serve(
        listener,
        backend,
        deadline,
        stop_rx,
        HEADER_TIMEOUT,
    ));

    // Connects and sends nothing.
    let silent = connect(addr, b"").await;
    // Sends half a request head, then nothing.
    let partial = connect(addr, b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n").await;
    // One whole keep-alive request, answered, then nothing.
    let kept = connect(addr, b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await;
    let (silent, partial, kept) = tokio::join!(
        until_closed(silent),
        until_closed(partial),
        until_closed(kept)
    );

    assert!(silent.is_some(), "a silent connection stays open");
    assert!(
        partial.is_some(),
        "a connection stalled mid-head stays open"
    );
    let kept = kept.expect("an idle keep-alive connection stays open");
    let reply = String::from_utf8_lossy(&kept);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("instance_pool_in_use"), "{reply}");
    let _ = stop.send(true);
    server.await.unwrap();
}
