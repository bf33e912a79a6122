//! The serve example's HTTP server (`examples/serve/http.rs`): a client that
//! sends no whole request head within the header timeout, on a fresh
//! connection or between keep-alive requests, or not all of a request's
//! body within it after the head, is disconnected, so idle clients cannot
//! hold the server's connection places.

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
async fn clients_that_send_no_request_head_or_body_are_disconnected_after_the_header_timeout() {
    let backend = Arc::new(Backend::new(Kind::InstancePool, 2, backend::MEMORY_LIMIT).unwrap());
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
    // A whole head announcing 100 bytes of body, 3 of them sent.
    let short_body = connect(
        addr,
        b"POST /run/t HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\nabc",
    )
    .await;
    let (silent, partial, kept, short_body) = tokio::join!(
        until_closed(silent),
        until_closed(partial),
        until_closed(kept),
        until_closed(short_body)
    );
    let short_body = short_body.expect("a connection stalled mid-body stays open");
    let reply = String::from_utf8_lossy(&short_body);
    assert!(
        reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{reply}"
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

/// The handler's isolation check can fail: run twice in one memory it
/// finds its own writes (in the data image and the input area); a fresh
/// instance on a slot a previous tenant wrote holds exactly the image and
/// zeroes, and its check finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_the_handlers_image_never_its_predecessors_writes() {
    let input = b"hello from a tenant";
    for kind in [Kind::InstancePool, Kind::WasmtimePooling] {
        let backend = Backend::new(kind, 1, backend::MEMORY_LIMIT).unwrap();
        {
            let mut store = backend.store();
            let instance = backend.instantiate(&mut store).await.unwrap();
            let first = backend.handle(&mut store, &instance, input, 1).await;
            assert_eq!(first.unwrap().leaked, 0, "{kind:?}: a fresh instance");
            let again = backend.handle(&mut store, &instance, input, 1).await;
            assert!(
                again.unwrap().leaked > 0,
                "{kind:?}: the check finds a previous run's writes"
            );
        }
        // One slot: the next tenant gets the slot the last one wrote.
        let mut store = backend.store();
        let instance = backend.instantiate(&mut store).await.unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let bytes = memory.data(&store);
        let (at, len) = (backend::DATA_AT, backend::DATA_LEN);
        assert!(bytes[..at].iter().all(|&b| b == 0), "{kind:?}: zeroes");
        assert!(
            bytes[at..at + len] == backend::handler_data()[..],
            "{kind:?}: the image"
        );
        assert!(
            bytes[at + len..].iter().all(|&b| b == 0),
            "{kind:?}: zeroes"
        );
        let reply = backend
            .handle(&mut store, &instance, input, 1)
            .await
            .unwrap();
        assert_eq!(reply.leaked, 0, "{kind:?}");
        assert_eq!(reply.output, input.to_ascii_uppercase());
    }
}
