//! A minimal HTTP/1.1 client for SOAP POSTs, over any `AsyncRead + AsyncWrite` stream, and
//! HTTP Digest (RFC 2617, MD5, `qop=auth`).
//!
//! Why hand-written: one request per connection (`Connection: close`, which every camera
//! handles, whereas keep-alive is a classic source of firmware bugs), no TLS (cameras are
//! reached on the cabinet's camera VLAN), and hard bounds on everything read. hyper 1.x would
//! need hyper-util, http, http-body and tower pieces for the same job, with its bounds spread
//! over several builders. The response head is parsed by `httparse` (tiny, fuzzed).
//!
//! Invariants: the head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers; the body is
//! at most the caller's limit, refused from `Content-Length` before reading, counted while
//! reading chunked or close-delimited bodies; URLs carrying `user:pass@` have it dropped at
//! parse time and [`Url`]'s `Display` never shows a query string (tokens live there).

use md5::{Digest as _, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wsse::Credentials;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in a response.
pub const MAX_HEADERS: usize = 64;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading or writing the stream failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before a complete response.
    #[error("connection closed before a complete response")]
    Closed,
    /// The response head is larger than [`MAX_HEAD`] or has too many headers.
    #[error("response head too large")]
    HeadTooLarge,
    /// The body is larger than the limit.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not HTTP/1.x.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// An `http://` URL split for sending. Credentials in the URL are dropped at parse time.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL. `https` is refused: this build has no TLS towards cameras.
    pub fn parse(s: &str) -> Result<Url, String> {
        let s = s.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!("unsupported URL scheme {scheme:?} (http only)"))
            }
            None => return Err("URL without scheme".into()),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Userinfo is never used (credentials come from the caller) and never kept.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in URL host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "bad port in URL")?,
                None if after.is_empty() => 80,
                None => return Err("garbage after ] in URL host".into()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "bad port in URL")?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("bad host in URL".into());
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("whitespace in URL path".into());
        }
        Ok(Url { host, port, path })
    }

    /// `host:port` for the Host header and connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    /// `http://host:port/path`: never credentials, never the query (it may carry tokens).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.split('?').next().unwrap_or("/");
        let q = if self.path.contains('?') { "?…" } else { "" };
        write!(f, "http://{}{path}{q}", self.authority())
    }
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A response: status, headers (names lower-cased), body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Values of a header (name lower-case).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes one SOAP POST and reads its response, bodies capped at `max_body`.
pub async fn post<S>(
    io: &mut S,
    url: &Url,
    action: &str,
    authorization: Option<&str>,
    body: &[u8],
    max_body: usize,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/soap+xml; charset=utf-8; action=\"{action}\"\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nAccept: application/soap+xml, text/xml\r\nConnection: close\r\nUser-Agent: cabinetd-onvif\r\n",
        url.path,
        url.authority(),
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str("Authorization: ");
        head.push_str(a);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    io.write_all(&msg).await?;
    io.flush().await?;
    read_response(io, max_body).await
}

/// Reads one response (skipping `1xx` interim responses).
pub async fn read_response<S>(io: &mut S, max_body: usize) -> Result<Response, HttpError>
where
    S: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (status, headers, consumed) = loop {
            if let Some(parsed) = parse_head(&buf)? {
                break parsed;
            }
            if buf.len() >= MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(MAX_HEAD - buf.len());
            let n = io.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(HttpError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..consumed);
        if (100..200).contains(&status) {
            continue;
        }
        let resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        return read_body(io, resp, buf, max_body).await;
    }
}

type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut hs);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let status = r
                .code
                .ok_or_else(|| HttpError::Malformed("no status".into()))?;
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            Ok(Some((status, headers, n)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

async fn read_body<S>(
    io: &mut S,
    mut resp: Response,
    mut buf: Vec<u8>,
    max_body: usize,
) -> Result<Response, HttpError>
where
    S: AsyncRead + Unpin,
{
    let too_large = HttpError::BodyTooLarge { limit: max_body };
    let chunked = resp
        .header_values("transfer-encoding")
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if resp.status == 204 || resp.status == 304 {
        return Ok(resp);
    }
    if chunked {
        resp.body = read_chunked(io, buf, max_body).await?;
        return Ok(resp);
    }
    let length = resp
        .header_values("content-length")
        .next()
        .map(str::to_string);
    if let Some(len) = length {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Malformed(format!("bad Content-Length {len:?}")))?;
        if len > max_body {
            return Err(too_large);
        }
        while buf.len() < len {
            let want = len - buf.len();
            let n = read_some(io, &mut buf, want).await?;
            if n == 0 {
                return Err(HttpError::Closed);
            }
        }
        buf.truncate(len);
        resp.body = buf;
        return Ok(resp);
    }
    // Close-delimited.
    loop {
        if buf.len() > max_body {
            return Err(too_large);
        }
        let want = max_body + 1 - buf.len();
        if read_some(io, &mut buf, want).await? == 0 {
            resp.body = buf;
            return Ok(resp);
        }
    }
}

async fn read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, HttpError> {
    let mut chunk = [0u8; 8192];
    let want = chunk.len().min(max.max(1));
    let n = io.read(&mut chunk[..want]).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_chunked<S>(
    io: &mut S,
    mut buf: Vec<u8>,
    max_body: usize,
) -> Result<Vec<u8>, HttpError>
where
    S: AsyncRead + Unpin,
{
    let mut body = Vec::new();
    loop {
        // Chunk-size line (extensions ignored), bounded.
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 1024 {
                return Err(HttpError::Malformed("chunk size line too long".into()));
            }
            if read_some(io, &mut buf, 1024).await? == 0 {
                return Err(HttpError::Closed);
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| HttpError::Malformed(format!("bad chunk size {hex:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers are not needed; the connection closes after this response.
            return Ok(body);
        }
        if body.len() + size > max_body {
            return Err(HttpError::BodyTooLarge { limit: max_body });
        }
        while buf.len() < size + 2 {
            let want = size + 2 - buf.len();
            if read_some(io, &mut buf, want).await? == 0 {
                return Err(HttpError::Closed);
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// A `WWW-Authenticate: Digest …` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Realm.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// Whether `qop=auth` is offered (else RFC 2069 digest).
    pub qop_auth: bool,
    /// `MD5-sess` instead of `MD5`.
    pub sess: bool,
}

/// The first usable Digest challenge among `WWW-Authenticate` values (MD5 / MD5-sess only).
pub fn digest_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    values.filter_map(parse_challenge).next()
}

fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, params) = v.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut qop_auth = false;
    let mut algorithm = String::from("MD5");
    for (k, val) in auth_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "nonce" => nonce = Some(val),
            "opaque" => opaque = Some(val),
            "qop" => {
                qop_auth = val
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            }
            "algorithm" => algorithm = val,
            _ => {}
        }
    }
    let sess = match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => false,
        "MD5-SESS" => true,
        _ => return None,
    };
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        opaque,
        qop_auth,
        sess,
    })
}

/// `key=value` / `key="quoted, value"` pairs of an auth header.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() && out.len() < 32 {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let val;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            val = v;
            rest = &q[end.min(q.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            val = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, val));
    }
    out
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Authorization` header value answering `ch` for `POST uri`.
pub fn digest_authorization(
    ch: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let nc = "00000001";
    let mut ha1 = md5_hex(&[&creds.username, &ch.realm, creds.password()]);
    if ch.sess {
        ha1 = md5_hex(&[&ha1, &ch.nonce, cnonce]);
    }
    let ha2 = md5_hex(&[method, uri]);
    let response = if ch.qop_auth {
        md5_hex(&[&ha1, &ch.nonce, nc, cnonce, "auth", &ha2])
    } else {
        md5_hex(&[&ha1, &ch.nonce, &ha2])
    };
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        r#"Digest username="{}", realm="{}", nonce="{}", uri="{}", response="{response}""#,
        q(&creds.username),
        q(&ch.realm),
        q(&ch.nonce),
        q(uri)
    );
    if ch.sess {
        out.push_str(", algorithm=MD5-sess");
    } else {
        out.push_str(", algorithm=MD5");
    }
    if ch.qop_auth {
        out.push_str(&format!(r#", qop=auth, nc={nc}, cnonce="{}""#, q(cnonce)));
    }
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(r#", opaque="{}""#, q(o)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn urls() {
        let u = Url::parse("http://user:pw@10.0.0.5:8080/onvif/device_service").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.5", 8080, "/onvif/device_service")
        );
        assert_eq!(u.to_string(), "http://10.0.0.5:8080/onvif/device_service");
        let u = Url::parse("http://cam/eventing_service?id=urn:uuid:1234").unwrap();
        assert_eq!(u.path, "/eventing_service?id=urn:uuid:1234");
        assert_eq!(u.to_string(), "http://cam:80/eventing_service?…");
        let u = Url::parse("http://[fe80::1]:81").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("fe80::1", 81, "/")
        );
        assert!(Url::parse("https://cam/").is_err());
        assert!(Url::parse("http://cam:99999/").is_err());
        assert!(Url::parse("http://cam/a b").is_err());
        assert!(Url::parse("cam/").is_err());
    }

    /// RFC 2617 §3.5 example.
    #[test]
    fn digest_rfc2617_example() {
        let ch = digest_challenge(
            [
                r#"Basic realm="x""#,
                r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
            ]
            .into_iter(),
        )
        .unwrap();
        assert!(ch.qop_auth && !ch.sess);
        let creds = Credentials::new("Mufasa", "Circle Of Life");
        let a = digest_authorization(&ch, &creds, "GET", "/dir/index.html", "0a4f113b");
        assert!(
            a.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{a}"
        );
        assert!(a.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
        assert!(digest_challenge(
            [r#"Digest realm="r", nonce="n", algorithm=SHA-256"#].into_iter()
        )
        .is_none());
    }

    async fn read(bytes: &[u8], max: usize) -> Result<Response, HttpError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let owned = bytes.to_vec();
        tokio::spawn(async move {
            let _ = b.write_all(&owned).await;
        });
        read_response(&mut a, max).await
    }

    #[tokio::test]
    async fn bodies_lengths_chunks_and_limits() {
        let r = read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA",
            10,
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let r = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 10).await.unwrap();
        assert_eq!(r.body, b"abcde");
        let r = read(b"HTTP/1.0 401 Unauthorized\r\n\r\n<html>no</html>", 100)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (401, &b"<html>no</html>"[..])
        );
        assert!(matches!(
            read(
                b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n",
                1 << 20
            )
            .await,
            Err(HttpError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n", 10).await,
            Err(HttpError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            read(&[b'a'; 20], 10).await,
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 10).await,
            Err(HttpError::Closed)
        ));
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.extend(std::iter::repeat_n(b"X-A: b\r\n".as_slice(), 3000).flatten());
        assert!(matches!(read(&big, 10).await, Err(HttpError::HeadTooLarge)));
    }

    #[tokio::test]
    async fn post_writes_both_action_headers() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let mut n = 0;
            while !got[..n].ends_with(b"<x/>") {
                n += tokio::io::AsyncReadExt::read(&mut b, &mut got[n..])
                    .await
                    .unwrap();
            }
            b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(got[..n].to_vec()).unwrap()
        });
        let url = Url::parse("http://127.0.0.1:8080/onvif/device_service").unwrap();
        let r = post(&mut a, &url, "urn:act", Some("Digest x"), b"<x/>", 100)
            .await
            .unwrap();
        assert_eq!(r.body, b"ok");
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /onvif/device_service HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(req
            .contains("Content-Type: application/soap+xml; charset=utf-8; action=\"urn:act\"\r\n"));
        assert!(req.contains("SOAPAction: \"urn:act\"\r\n"));
        assert!(req.contains("Authorization: Digest x\r\n"));
        assert!(req.contains("Content-Length: 4\r\n"));
    }
}
