//! The HTTP side, on hyper: the server (`POST /run/<tenant>?grow=N`,
//! `GET /metrics`) and the client connection the load mode uses.

use crate::backend::{Backend, MAX_INPUT};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a connection stays open, whatever its client does.
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Serves `backend` on `listener` until `stop` turns true or `deadline`
/// passes; then stops accepting and gives open connections a second.
///
/// A connection that has not sent a whole request head `header_timeout`
/// after it opened, or after its last response (keep-alive), is closed,
/// and so is one whose request body has not all come `header_timeout`
/// after its head (answered `408 Request Timeout`): idle and trickling
/// clients cannot hold the `MAX_CONNECTIONS` places.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<Backend>,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors, say: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(backend.clone(), req, header_timeout));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
        });
        // Reap finished connections; at the cap, wait for one to end.
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            let _ = tokio::time::timeout_at(deadline, connections.join_next()).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn handle(
    backend: Arc<Backend>,
    req: Request<Incoming>,
    body_timeout: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if req.method() == Method::GET && path == "/metrics" {
        let text = "text/plain; version=0.0.4; charset=utf-8";
        return Ok(reply(StatusCode::OK, text, backend.metrics()));
    }
    let Some(tenant) = path.strip_prefix("/run/").filter(|t| !t.is_empty()) else {
        let usage = "POST /run/<tenant>?grow=N with a body, or GET /metrics\n";
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", usage.into()));
    };
    if req.method() != Method::POST {
        let text = "POST the input to /run/<tenant>\n";
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            text.into(),
        ));
    }
    let grow = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("grow="))
        .map_or(Ok(0), str::parse::<u32>);
    let Ok(grow) = grow else {
        let text = format!("grow must be a page count: {query:?}\n");
        return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", text));
    };
    let body = Limited::new(req.into_body(), MAX_INPUT).collect();
    let Ok(body) = tokio::time::timeout(body_timeout, body).await else {
        // The body unread: hyper closes the connection after this reply.
        let text = format!("body not received within {body_timeout:?}\n");
        return Ok(reply(StatusCode::REQUEST_TIMEOUT, "text/plain", text));
    };
    let input = match body {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let text = format!("body: {e} (at most {MAX_INPUT} bytes)\n");
            return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", text));
        }
    };
    Ok(match backend.run(&input, grow).await {
        Ok(r) => {
            let body = serde_json::json!({
                "tenant": tenant,
                "output": String::from_utf8_lossy(&r.output),
                "grow": r.grow,
                "leaked_bits": r.leaked,
            });
            reply(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        Err(e) => {
            let text = format!("{e:?}\n");
            reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", text)
        }
    })
}

/// A keep-alive client connection to `addr`.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    _driver: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client {
            sender,
            _driver: driver,
        })
    }

    /// Sends one request; returns the status and the body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}
