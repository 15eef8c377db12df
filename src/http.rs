//! The cabinet's local HTTP endpoint: `GET /metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! Deliberately small: GET only, one request per connection, request head capped at
//! [`MAX_REQUEST_HEAD`] and read within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! connections at once (beyond that a new connection gets `503` and is closed at once), so a
//! stuck or hostile client cannot hold memory, tasks or file descriptors (which the outbox needs
//! too) for long. Connections are tasks of one `JoinSet`, aborted when the endpoint stops. It
//! listens on loopback by default; ops scrape it through the cabinet's own agent or tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Largest request head accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; `systemd/cabinetd.service` sets `LimitNOFILE` well above it.
pub const MAX_CONNECTIONS: usize = 64;
/// What a connection beyond [`MAX_CONNECTIONS`] gets before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\nRetry-After: 1\r\n\r\nbusy\n";

/// What the endpoint serves; implemented by the daemon.
pub trait Endpoint: Send + Sync + 'static {
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Whether the daemon is ready (config loaded, store open, loops running).
    fn ready(&self) -> bool;
    /// The `/status` JSON document.
    fn status(&self) -> serde_json::Value;
}

/// A response: status code, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub code: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Route one request line to a response (pure, for tests).
pub fn route(endpoint: &dyn Endpoint, method: &str, path: &str) -> Response {
    let text = |code, body: &str| Response {
        code,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    };
    if method != "GET" && method != "HEAD" {
        return text(405, "method not allowed\n");
    }
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: endpoint.metrics().into_bytes(),
        },
        "/healthz" => text(200, "ok\n"),
        "/readyz" if endpoint.ready() => text(200, "ready\n"),
        "/readyz" => text(503, "not ready\n"),
        "/status" => Response {
            code: 200,
            content_type: "application/json",
            body: serde_json::to_vec_pretty(&endpoint.status()).expect("JSON value serialises"),
        },
        _ => text(404, "not found: try /metrics, /healthz, /readyz, /status\n"),
    }
}

/// Bind the listener (so that binding errors surface before READY).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until `stop` resolves; then the open connections are aborted.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<dyn Endpoint>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let mut stop = std::pin::pin!(stop);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if conns.len() >= MAX_CONNECTIONS => {
                    // Answer and close at once: costs no task and frees the fd now. What the
                    // client already sent is read first, so the close is a FIN, not a reset
                    // (a request arriving later still meets a reset: the client sees an error
                    // either way, never a hang).
                    let mut sink = [0u8; 1024];
                    let _ = stream.try_read(&mut sink);
                    let _ = stream.try_write(BUSY);
                }
                Ok((stream, _)) => {
                    let endpoint = endpoint.clone();
                    conns.spawn(async move {
                        if let Err(e) = handle(stream, endpoint.as_ref()).await {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

async fn handle(mut stream: TcpStream, endpoint: &dyn Endpoint) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let Some(head) = head else {
        return write_response(
            &mut stream,
            &Response {
                code: 400,
                content_type: "text/plain",
                body: b"bad request\n".to_vec(),
            },
            false,
        )
        .await;
    };
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = route(endpoint, method, path);
    write_response(&mut stream, &response, method == "HEAD").await
}

/// Read until the blank line ending the head; `None` if it is too large or not UTF-8.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    Ok(String::from_utf8(buf).ok())
}

async fn write_response(
    stream: &mut TcpStream,
    r: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match r.code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let header = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        r.code,
        reason,
        r.content_type,
        r.body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(&r.body).await?;
    }
    stream.shutdown().await
}

/// A GET for `cabinetd status` and tests: returns (status code, body).
pub async fn get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })?;
        Ok((code, body.to_owned()))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        ready: bool,
    }
    impl Endpoint for Fake {
        fn metrics(&self) -> String {
            "cabinetd_uplink_connected 0\n".into()
        }
        fn ready(&self) -> bool {
            self.ready
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"mode": "autonomous"})
        }
    }

    #[test]
    fn routes() {
        let f = Fake { ready: false };
        assert_eq!(route(&f, "GET", "/metrics").code, 200);
        assert_eq!(route(&f, "GET", "/readyz").code, 503);
        assert_eq!(route(&Fake { ready: true }, "GET", "/readyz").code, 200);
        assert_eq!(route(&f, "POST", "/metrics").code, 405);
        assert_eq!(route(&f, "GET", "/nope").code, 404);
        assert_eq!(
            route(&f, "GET", "/status?x=1").content_type,
            "application/json"
        );
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_on_shutdown() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(serve(listener, Arc::new(Fake { ready: true }), stop));
        let (code, body) = get(&addr, "/metrics", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("cabinetd_uplink_connected"));
        // Idle connections beyond the cap: a new client is told 503 at once, not left hanging.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(&addr).await.unwrap());
        }
        match get(&addr, "/metrics", Duration::from_secs(5)).await {
            Ok((code, _)) => assert_eq!(code, 503),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
        }
        drop(idle);
        // Once they are gone, it answers again (within the bound of a few tries).
        let mut code = 0;
        for _ in 0..100 {
            code = get(&addr, "/metrics", Duration::from_secs(5))
                .await
                .map_or(0, |r| r.0);
            if code == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(code, 200);
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
