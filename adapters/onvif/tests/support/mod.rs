//! Test support: a quirky ONVIF camera written from the standard and the vendor quirk list
//! (no captured file is copied), serving over loopback TCP or `tokio::io::duplex`.
//!
//! It checks WS-Security digests and HTTP Digest with its own code (sha1/md5 directly, string
//! extraction of the token), keeps a log of every request (action, path, how it was
//! authenticated) so tests can prove what was — and was never — asked.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cabinetd_onvif::http::Url;
use cabinetd_onvif::Connector;
use md5::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the camera misbehaves.
#[derive(Debug, Clone)]
pub struct Quirks {
    pub username: String,
    pub password: String,
    /// Camera clock = real clock + this.
    pub clock_offset_s: i64,
    /// WS-Security `Created` accepted within this many seconds of the camera's clock.
    pub skew_tolerance_s: i64,
    /// Default namespaces, no prefixes.
    pub prefix_free: bool,
    /// xs:dateTime values without a zone.
    pub no_z: bool,
    /// Only HTTP Digest is accepted; UsernameToken is ignored; 401 + challenge otherwise.
    pub digest_only: bool,
    /// 401 answers carry an HTML page instead of a SOAP fault.
    pub html_401: bool,
    /// No `WWW-Authenticate` on 401 (with `digest_only` false: UsernameToken refused → 401).
    pub no_challenge: bool,
    /// GetSystemDateAndTime requires authentication.
    pub clock_needs_auth: bool,
    /// The camera forgets its subscription on this pull (1-based count over its life).
    pub forget_on_pull: Option<u32>,
    /// PullMessages number N (1-based) is never answered.
    pub hang_on_pull: Option<u32>,
    /// GetServices answers `ter:Action` (AXIS Q6045-E) → GetCapabilities fallback.
    pub no_get_services: bool,
    /// Answer GetDeviceInformation with this hostile body instead.
    pub hostile: Option<Hostile>,
    /// Chunked transfer encoding for answers.
    pub chunked: bool,
    /// Gone from the network: every connection is closed without an answer.
    pub offline: bool,
    /// GetProfiles carries a stream URI with credentials in it (as some cameras put one in
    /// their profiles' metadata): it must never be logged or published.
    pub uri_in_profiles: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    BillionLaughs,
    ExternalEntity,
    /// 50 MB announced with Content-Length.
    HugeLength,
    /// 50 MB streamed chunked.
    HugeChunked,
    DeepNesting,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            username: "operator".into(),
            password: "s3cret-pw".into(),
            clock_offset_s: 0,
            skew_tolerance_s: 5,
            prefix_free: false,
            no_z: false,
            digest_only: false,
            html_401: false,
            no_challenge: false,
            clock_needs_auth: false,
            forget_on_pull: None,
            hang_on_pull: None,
            no_get_services: false,
            hostile: None,
            chunked: false,
            offline: false,
            uri_in_profiles: false,
        }
    }
}

/// How a logged request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSeen {
    None,
    TokenOk,
    TokenBad,
    DigestOk,
    DigestBad,
}

impl AuthSeen {
    /// Carried credentials that were refused (a failed login on a real camera).
    pub fn failed_login(self) -> bool {
        matches!(self, AuthSeen::TokenBad | AuthSeen::DigestBad)
    }
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub action: String,
    pub path: String,
    pub auth: AuthSeen,
    /// When the request arrived.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Logged>,
    subs: Vec<u32>,
    next_sub: u32,
    pulls: u32,
    nonce: u32,
    motion: bool,
    clock_set: Option<i64>,
    preset: Option<String>,
}

/// The camera (cheap to clone: shared state).
#[derive(Clone)]
pub struct QuirkCam {
    pub quirks: Arc<Mutex<Quirks>>,
    state: Arc<Mutex<State>>,
    pub addr: Option<SocketAddr>,
}

const ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const TT: &str = "http://www.onvif.org/ver10/schema";
const TEV: &str = "http://www.onvif.org/ver10/events/wsdl";
const WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";
const WSA: &str = "http://www.w3.org/2005/08/addressing";
const TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
const TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const TER: &str = "http://www.onvif.org/ver10/error";

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Civil date from Unix seconds (independent of the crate's own arithmetic).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

fn xsd(secs: i64, z: bool) -> String {
    let (y, m, d, h, mi, s) = civil(secs);
    format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}",
        if z { "Z" } else { "" }
    )
}

fn parse_xsd(s: &str) -> Option<i64> {
    // YYYY-MM-DDThh:mm:ssZ only: what a strict camera accepts.
    let b = s.as_bytes();
    if b.len() != 20 || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec) = (n(11..13)?, n(14..16)?, n(17..19)?);
    Some(unix_from_civil(y, m, d, h, mi, sec))
}

/// Unix seconds of a UTC civil time (independent of the crate's own arithmetic).
fn unix_from_civil(y: i64, m: i64, d: i64, h: i64, mi: i64, sec: i64) -> i64 {
    let y2 = y - i64::from(m <= 2);
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60 + sec
}

/// Text of the first element whose name ends with `:tag` or is `tag` (prefix-tolerant, as
/// real cameras do it).
fn extract<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = xml[from..].find(tag) {
        let start = from + i;
        from = start + tag.len();
        let before = xml[..start].chars().last()?;
        if before != '<' && before != ':' {
            continue;
        }
        let after = xml[from..].chars().next()?;
        if after != '>' && after != ' ' {
            continue;
        }
        let open_end = from + xml[from..].find('>')?;
        let close = open_end + 1 + xml[open_end + 1..].find("</")?;
        return Some(xml[open_end + 1..close].trim());
    }
    None
}

impl QuirkCam {
    pub fn new(quirks: Quirks) -> Self {
        QuirkCam {
            quirks: Arc::new(Mutex::new(quirks)),
            state: Arc::new(Mutex::new(State {
                next_sub: 1,
                ..State::default()
            })),
            addr: None,
        }
    }

    /// Listens on 127.0.0.1:0 and serves every connection.
    pub async fn listen(mut self) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = Some(l.local_addr().unwrap());
        let cam = self.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let cam = cam.clone();
                tokio::spawn(async move { cam.serve(s).await });
            }
        });
        self
    }

    pub fn url(&self) -> String {
        format!(
            "http://{}/onvif/device_service",
            self.addr.expect("listening")
        )
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn actions(&self) -> Vec<String> {
        self.log().into_iter().map(|l| l.action).collect()
    }

    pub fn failed_logins(&self) -> usize {
        self.log().iter().filter(|l| l.auth.failed_login()).count()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    pub fn set(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut self.quirks.lock().unwrap());
    }

    pub fn clock_set(&self) -> Option<i64> {
        self.state.lock().unwrap().clock_set
    }

    pub fn preset(&self) -> Option<String> {
        self.state.lock().unwrap().preset.clone()
    }

    pub fn live_subscriptions(&self) -> usize {
        self.state.lock().unwrap().subs.len()
    }

    /// Serves one connection (one request, then close).
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (path, headers, body) = loop {
            let n = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(at)) = req.parse(&buf) {
                let path = req.path.unwrap_or("/").to_string();
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < at + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                break (
                    path,
                    headers,
                    String::from_utf8_lossy(&buf[at..at + len]).to_string(),
                );
            }
        };
        let q = self.quirks.lock().unwrap().clone();
        if q.offline {
            return; // the connection is dropped unanswered
        }
        let hv = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let ct_action = hv("content-type").and_then(|c| {
            c.split("action=\"")
                .nth(1)
                .map(|a| a.trim_end_matches('"').to_string())
        });
        let action = hv("soapaction")
            .map(|a| a.trim_matches('"').to_string())
            .or(ct_action)
            .unwrap_or_default();
        let op = action
            .rsplit('/')
            .next()
            .unwrap_or("")
            .trim_end_matches("Request")
            .to_string();

        let auth = self.check_auth(&q, &path, hv("authorization").as_deref(), &body);
        self.state.lock().unwrap().log.push(Logged {
            action: op.clone(),
            path: path.clone(),
            auth,
            at: std::time::Instant::now(),
        });
        let needs_auth = op != "GetSystemDateAndTime" || q.clock_needs_auth;
        let authed = matches!(auth, AuthSeen::TokenOk | AuthSeen::DigestOk);
        let resp = if needs_auth && !authed {
            self.unauthorized(&q, auth)
        } else {
            self.answer(&q, &op, &body, &path).await
        };
        let Some((status, extra, ctype, payload)) = resp else {
            // Hang: hold the connection, never answer (the client's timeout fires first).
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        };
        let mut head =
            format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nConnection: close\r\n{extra}");
        match payload {
            Payload::Bytes(b) if q.chunked => {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                let _ = s.write_all(head.as_bytes()).await;
                for c in b.chunks(1000) {
                    let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
                    let _ = s.write_all(c).await;
                    let _ = s.write_all(b"\r\n").await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
            Payload::Bytes(b) => {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&b).await;
            }
            Payload::Huge { chunked } => {
                const HUGE: usize = 50 * 1000 * 1000;
                let block = vec![b'A'; 64 * 1024];
                if chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                } else {
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", HUGE + 30));
                }
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s
                    .write_all(if chunked {
                        &b"3\r\n<a>\r\n"[..]
                    } else {
                        b"<a>"
                    })
                    .await;
                let mut sent = 0;
                while sent < HUGE {
                    let r = if chunked {
                        let mut c = format!("{:x}\r\n", block.len()).into_bytes();
                        c.extend_from_slice(&block);
                        c.extend_from_slice(b"\r\n");
                        s.write_all(&c).await
                    } else {
                        s.write_all(&block).await
                    };
                    if r.is_err() {
                        return; // the client hung up, as it should
                    }
                    sent += block.len();
                }
            }
        }
        let _ = s.flush().await;
        let _ = s.shutdown().await;
    }

    fn check_auth(&self, q: &Quirks, path: &str, authz: Option<&str>, body: &str) -> AuthSeen {
        if let Some(a) = authz.filter(|a| a.starts_with("Digest ")) {
            let field = |k: &str| {
                a.split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_string)
            };
            let nc = a
                .split("nc=")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("")
                .trim()
                .to_string();
            let (Some(user), Some(nonce), Some(uri), Some(resp), Some(cnonce)) = (
                field("username"),
                field("nonce"),
                field("uri"),
                field("response"),
                field("cnonce"),
            ) else {
                return AuthSeen::DigestBad;
            };
            let md5 = |s: String| {
                md5::Md5::digest(s.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            let ha1 = md5(format!("{}:cam-realm:{}", q.username, q.password));
            let ha2 = md5(format!("POST:{uri}"));
            let want = md5(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
            let fresh = nonce.starts_with("n-");
            return if user == q.username && resp == want && uri == path && fresh {
                AuthSeen::DigestOk
            } else {
                AuthSeen::DigestBad
            };
        }
        let Some(user) = extract(body, "Username") else {
            return AuthSeen::None;
        };
        if q.digest_only {
            return AuthSeen::None; // UsernameToken ignored by a Digest-only camera
        }
        let (Some(pw), Some(nonce), Some(created)) = (
            extract(body, "Password"),
            extract(body, "Nonce"),
            extract(body, "Created"),
        ) else {
            return AuthSeen::TokenBad;
        };
        let Ok(nonce) = base64::engine::general_purpose::STANDARD.decode(nonce) else {
            return AuthSeen::TokenBad;
        };
        let mut h = sha1::Sha1::new();
        sha1::Digest::update(&mut h, &nonce);
        sha1::Digest::update(&mut h, created.as_bytes());
        sha1::Digest::update(&mut h, q.password.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(sha1::Digest::finalize(h));
        let cam_now = now_unix() + q.clock_offset_s;
        let in_time = parse_xsd(created).is_some_and(|c| (c - cam_now).abs() <= q.skew_tolerance_s);
        if user == q.username && pw == want && in_time {
            AuthSeen::TokenOk
        } else {
            AuthSeen::TokenBad
        }
    }

    fn unauthorized(&self, q: &Quirks, auth: AuthSeen) -> Option<Response> {
        if !q.digest_only && !q.html_401 && auth != AuthSeen::None && !q.no_challenge {
            // A UsernameToken camera: HTTP 400 + ter:NotAuthorized.
            let f = fault(q, "Sender", "ter:NotAuthorized", "Sender not Authorized");
            return Some((
                "400 Bad Request",
                String::new(),
                "application/soap+xml; charset=utf-8",
                Payload::Bytes(f.into_bytes()),
            ));
        }
        let mut extra = String::new();
        if !q.no_challenge {
            let n = {
                let mut st = self.state.lock().unwrap();
                st.nonce += 1;
                st.nonce
            };
            extra = format!("WWW-Authenticate: Digest realm=\"cam-realm\", qop=\"auth\", nonce=\"n-{n}\", opaque=\"op\"\r\n");
        }
        let (ctype, body) = if q.html_401 {
            ("text/html", "<!DOCTYPE html><html><head><title>401 Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>".to_string())
        } else {
            (
                "application/soap+xml; charset=utf-8",
                fault(q, "Sender", "ter:NotAuthorized", "Sender not Authorized"),
            )
        };
        Some((
            "401 Unauthorized",
            extra,
            ctype,
            Payload::Bytes(body.into_bytes()),
        ))
    }

    async fn answer(&self, q: &Quirks, op: &str, body: &str, path: &str) -> Option<Response> {
        let ok = |xml: String| {
            Some((
                "200 OK",
                String::new(),
                "application/soap+xml; charset=utf-8",
                Payload::Bytes(xml.into_bytes()),
            ))
        };
        let cam_now = now_unix() + q.clock_offset_s;
        match op {
            "GetSystemDateAndTime" => {
                let (y, m, d, h, mi, s) = civil(cam_now);
                ok(envelope(q, &format!(
                    "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>true</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST7:00:00DST01:00:00,M3.2.0/02:00:00,M11.1.0/02:00:00</tt:TZ></tt:TimeZone><tt:UTCDateTime><tt:Time><tt:Hour>{h}</tt:Hour><tt:Minute>{mi}</tt:Minute><tt:Second>{s}</tt:Second></tt:Time><tt:Date><tt:Year>{y}</tt:Year><tt:Month>{m}</tt:Month><tt:Day>{d}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
                )))
            }
            "GetDeviceInformation" => {
                if let Some(h) = q.hostile {
                    return Some(hostile(h));
                }
                ok(envelope(q, "<tds:GetDeviceInformationResponse><tds:Manufacturer>QuirkCam</tds:Manufacturer><tds:Model>QC-1 PTZ</tds:Model><tds:FirmwareVersion>5.5.1 build 180227</tds:FirmwareVersion><tds:SerialNumber>QC0001</tds:SerialNumber><tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>"))
            }
            "GetServices" if q.no_get_services => Some(("500 Internal Server Error", String::new(), "application/soap+xml", Payload::Bytes(fault(q, "Receiver", "ter:Action", "Action failed").into_bytes()))),
            "GetServices" => {
                let a = self.addr.map(|a| a.to_string()).unwrap_or_else(|| "cam".into());
                // Internal host and wrong port, as some cameras report: the client must keep
                // the configured host and port.
                let bad = "http://192.0.2.1:8999";
                ok(envelope(q, &format!(
                    "<tds:GetServicesResponse><tds:Service><tds:Namespace>{TDS}</tds:Namespace><tds:XAddr>http://{a}/onvif/device_service</tds:XAddr></tds:Service><tds:Service><tds:Namespace>{TRT}</tds:Namespace><tds:XAddr>{bad}/onvif/media</tds:XAddr></tds:Service><tds:Service><tds:Namespace>{TPTZ}</tds:Namespace><tds:XAddr>{bad}/onvif/ptz</tds:XAddr></tds:Service><tds:Service><tds:Namespace>{TEV}</tds:Namespace><tds:XAddr>\n {bad}/onvif/events \n</tds:XAddr></tds:Service></tds:GetServicesResponse>"
                )))
            }
            "GetCapabilities" => ok(envelope(q,
                "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Device><tt:XAddr>http://cam/onvif/device_service</tt:XAddr></tt:Device><tt:Events><tt:XAddr>http://cam/onvif/events</tt:XAddr><tt:WSPullPointSupport>true</tt:WSPullPointSupport></tt:Events><tt:Media><tt:XAddr>http://cam/onvif/media</tt:XAddr></tt:Media><tt:PTZ><tt:XAddr>http://cam/onvif/ptz</tt:XAddr></tt:PTZ></tds:Capabilities></tds:GetCapabilitiesResponse>",
            )),
            "GetProfiles" if q.uri_in_profiles => ok(envelope(q, "<trt:GetProfilesResponse><trt:Profiles token=\"main\" fixed=\"true\"><tt:Name>mainStream</tt:Name><tt:VideoSourceConfiguration token=\"vs\"><tt:Name>vs</tt:Name></tt:VideoSourceConfiguration><tt:PTZConfiguration token=\"ptz0\"><tt:Name>ptz</tt:Name></tt:PTZConfiguration><tt:Extension><tt:Uri>rtsp://operator:s3cret-pw@10.0.0.50:554/Streaming/Channels/101?token=stream-tok-42</tt:Uri></tt:Extension></trt:Profiles></trt:GetProfilesResponse>")),
            "GetProfiles" => ok(envelope(q, "<trt:GetProfilesResponse><trt:Profiles token=\"main\" fixed=\"true\"><tt:Name>mainStream</tt:Name><tt:VideoSourceConfiguration token=\"vs\"><tt:Name>vs</tt:Name></tt:VideoSourceConfiguration><tt:PTZConfiguration token=\"ptz0\"><tt:Name>ptz</tt:Name></tt:PTZConfiguration></trt:Profiles></trt:GetProfilesResponse>")),
            "GetPresets" => {
                let mut items = String::new();
                for i in 1..=255 {
                    let name = match i {
                        1 => "Entrance",
                        2 => "Parking",
                        _ => "",
                    };
                    if name.is_empty() {
                        items.push_str(&format!("<tptz:Preset token=\"{i}\"/>"));
                    } else {
                        items.push_str(&format!("<tptz:Preset token=\"{i}\"><tt:Name>{name}</tt:Name></tptz:Preset>"));
                    }
                }
                ok(envelope(q, &format!("<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>")))
            }
            "GotoPreset" => {
                self.state.lock().unwrap().preset = extract(body, "PresetToken").map(str::to_string);
                ok(envelope(q, "<tptz:GotoPresetResponse/>"))
            }
            "SetSystemDateAndTime" => {
                let n = |t: &str| extract(body, t).and_then(|v| v.parse::<i64>().ok());
                if let (Some(y), Some(h)) = (n("Year"), n("Hour")) {
                    self.state.lock().unwrap().clock_set = Some(y * 10_000 + h);
                }
                // The camera's clock now reads what was set (as a real camera's would).
                if let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) =
                    (n("Year"), n("Month"), n("Day"), n("Hour"), n("Minute"), n("Second"))
                {
                    let set = unix_from_civil(y, mo, d, h, mi, sec);
                    self.quirks.lock().unwrap().clock_offset_s = set - now_unix();
                }
                ok(envelope(q, "<tds:SetSystemDateAndTimeResponse/>"))
            }
            "SystemReboot" => ok(envelope(q, "<tds:SystemRebootResponse><tds:Message>Rebooting in 90 seconds</tds:Message></tds:SystemRebootResponse>")),
            "CreatePullPointSubscription" => {
                let id = {
                    let mut st = self.state.lock().unwrap();
                    let id = st.next_sub;
                    st.next_sub += 1;
                    st.subs.push(id);
                    id
                };
                let a = self.addr.map(|a| a.to_string()).unwrap_or_else(|| "10.9.9.9".into());
                ok(envelope(q, &format!(
                    "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://{a}/onvif/Events/PullSubManager_{id}?token=abc</wsa:Address><wsa:ReferenceParameters><x:SubscriptionId xmlns:x=\"urn:quirk:event\">{id}</x:SubscriptionId></wsa:ReferenceParameters></tev:SubscriptionReference><wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
                    xsd(cam_now, !q.no_z), xsd(cam_now + 600, !q.no_z)
                )))
            }
            "PullMessages" | "Renew" | "Unsubscribe" | "SetSynchronizationPoint" => {
                let id: Option<u32> = path.split("PullSubManager_").nth(1).and_then(|r| r.split('?').next()).and_then(|v| v.parse().ok());
                let echoed: Option<u32> = extract(body, "SubscriptionId").and_then(|v| v.parse().ok());
                let (known, pull_no) = {
                    let mut st = self.state.lock().unwrap();
                    let known = id.is_some() && id == echoed && st.subs.contains(&id.unwrap());
                    if op == "PullMessages" {
                        st.pulls += 1;
                    }
                    (known, st.pulls)
                };
                if op == "PullMessages" && q.hang_on_pull == Some(pull_no) {
                    return None;
                }
                let forget = op == "PullMessages" && q.forget_on_pull == Some(pull_no);
                if forget {
                    self.state.lock().unwrap().subs.clear();
                }
                if !known || forget {
                    let f = fault(q, "Sender", "wsrf-rw:ResourceUnknownFault", "subscription does not exist");
                    return Some(("400 Bad Request", String::new(), "application/soap+xml", Payload::Bytes(f.into_bytes())));
                }
                match op {
                    "PullMessages" => {
                        let active = {
                            let mut st = self.state.lock().unwrap();
                            st.motion = !st.motion;
                            st.motion
                        };
                        let t = xsd(cam_now, !q.no_z);
                        ok(envelope(q, &format!(
                            "<tev:PullMessagesResponse><tev:CurrentTime>{t}</tev:CurrentTime><tev:TerminationTime>{}</tev:TerminationTime><wsnt:NotificationMessage><wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic><wsnt:Message><tt:Message UtcTime=\"{t}\" PropertyOperation=\"Changed\"><tt:Source><tt:SimpleItem Name=\"VideoSourceConfigurationToken\" Value=\"vs\"/><tt:SimpleItem Name=\"Rule\" Value=\"MyMotionDetectorRule\"/></tt:Source><tt:Data><tt:SimpleItem Name=\"IsMotion\" Value=\"{active}\"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage><wsnt:NotificationMessage><wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">tns1:Monitoring/ProcessorUsage</wsnt:Topic><wsnt:Message><tt:Message UtcTime=\"{t}\" PropertyOperation=\"Changed\"><tt:Source><tt:SimpleItem Name=\"Token\" Value=\"cpu\"/></tt:Source><tt:Data><tt:SimpleItem Name=\"Value\" Value=\"0.3\"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage></tev:PullMessagesResponse>",
                            xsd(cam_now + 600, !q.no_z)
                        )))
                    }
                    "Renew" => ok(envelope(q, &format!("<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:RenewResponse>", xsd(cam_now + 600, !q.no_z)))),
                    "Unsubscribe" => {
                        self.state.lock().unwrap().subs.retain(|s| Some(*s) != id);
                        ok(envelope(q, "<wsnt:UnsubscribeResponse/>"))
                    }
                    _ => ok(envelope(q, "<tev:SetSynchronizationPointResponse/>")),
                }
            }
            _ => Some(("400 Bad Request", String::new(), "application/soap+xml", Payload::Bytes(fault(q, "Sender", "ter:ActionNotSupported", "not supported").into_bytes()))),
        }
    }
}

enum Payload {
    Bytes(Vec<u8>),
    Huge { chunked: bool },
}

type Response = (&'static str, String, &'static str, Payload);

fn hostile(h: Hostile) -> Response {
    let body = match h {
        Hostile::BillionLaughs => {
            let mut s = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
            for i in 1..10 {
                let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
                s.push_str(&format!("<!ENTITY lol{i} \"{}\">", format!("&{prev};").repeat(10)));
            }
            s.push_str("]><lolz>&lol9;</lolz>");
            s
        }
        Hostile::ExternalEntity => format!(
            "<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY xxe SYSTEM \"file:///etc/hostname\">]><s:Envelope xmlns:s=\"{ENV}\"><s:Body><tds:GetDeviceInformationResponse xmlns:tds=\"{TDS}\"><tds:Manufacturer>&xxe;</tds:Manufacturer></tds:GetDeviceInformationResponse></s:Body></s:Envelope>"
        ),
        Hostile::DeepNesting => format!(
            "<s:Envelope xmlns:s=\"{ENV}\"><s:Body>{}{}</s:Body></s:Envelope>",
            "<a>".repeat(10_000),
            "</a>".repeat(10_000)
        ),
        Hostile::HugeLength => return ("200 OK", String::new(), "application/soap+xml", Payload::Huge { chunked: false }),
        Hostile::HugeChunked => return ("200 OK", String::new(), "application/soap+xml", Payload::Huge { chunked: true }),
    };
    (
        "200 OK",
        String::new(),
        "application/soap+xml",
        Payload::Bytes(body.into_bytes()),
    )
}

fn fault(q: &Quirks, code: &str, sub: &str, reason: &str) -> String {
    envelope(q, &format!(
        "<env:Fault><env:Code><env:Value>env:{code}</env:Value><env:Subcode><env:Value>{sub}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason></env:Fault>"
    ))
}

/// Wraps a body written with conventional prefixes; `prefix_free` rewrites it to default
/// namespaces (every element redeclares its namespace), otherwise odd prefixes are used for
/// the envelope and `tt` (`MC1`, `SOAP-ENV`-like `e9`).
fn envelope(q: &Quirks, body: &str) -> String {
    if q.prefix_free {
        return format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Envelope xmlns=\"{ENV}\"><Header/><Body>{}</Body></Envelope>",
            unprefix(body)
        );
    }
    let body = body
        .replace("<tt:", "<MC1:")
        .replace("</tt:", "</MC1:")
        .replace("<env:", "<e9:")
        .replace("</env:", "</e9:")
        .replace(">env:", ">e9:");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<e9:Envelope xmlns:e9=\"{ENV}\" xmlns:tds=\"{TDS}\" xmlns:MC1=\"{TT}\" xmlns:tev=\"{TEV}\" xmlns:wsnt=\"{WSNT}\" xmlns:wsa=\"{WSA}\" xmlns:tptz=\"{TPTZ}\" xmlns:trt=\"{TRT}\" xmlns:ter=\"{TER}\" xmlns:tns1=\"http://www.onvif.org/ver10/topics\" xmlns:wsrf-rw=\"http://docs.oasis-open.org/wsrf/rw-2\">\n  <e9:Header/>\n  <e9:Body>\n    {body}\n  </e9:Body>\n</e9:Envelope>\n"
    )
}

/// `<tds:X>` → `<X xmlns="…device…">`, `</tds:X>` → `</X>`; QName texts keep their prefixes,
/// declared on the element that carries them.
fn unprefix(body: &str) -> String {
    let map = [
        ("tds", TDS),
        ("tt", TT),
        ("tev", TEV),
        ("wsnt", WSNT),
        ("wsa", WSA),
        ("tptz", TPTZ),
        ("trt", TRT),
        ("env", ENV),
    ];
    let mut out = body.to_string();
    for (p, ns) in map {
        out = out.replace(&format!("</{p}:"), "</");
        let mut res = String::new();
        let pat = format!("<{p}:");
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&pat) {
            res.push_str(&rest[..i]);
            let after = &rest[i + pat.len()..];
            let end = after.find([' ', '>', '/']).unwrap_or(after.len());
            res.push('<');
            res.push_str(&after[..end]);
            res.push_str(&format!(" xmlns=\"{ns}\""));
            rest = &after[end..];
        }
        res.push_str(rest);
        out = res;
    }
    // QName values in text (fault subcodes, topics).
    out.replace(">ter:", &format!(" xmlns:ter=\"{TER}\">ter:"))
        .replace(
            ">tns1:",
            " xmlns:tns1=\"http://www.onvif.org/ver10/topics\">tns1:",
        )
        .replace(
            ">wsrf-rw:",
            " xmlns:wsrf-rw=\"http://docs.oasis-open.org/wsrf/rw-2\">wsrf-rw:",
        )
        .replace(">env:", &format!(" xmlns:env=\"{ENV}\">env:"))
}

/// Connects the client to the camera through `tokio::io::duplex` (paused-clock tests).
#[derive(Clone)]
pub struct DuplexConnector(pub QuirkCam);

impl Connector for DuplexConnector {
    type Io = tokio::io::DuplexStream;
    async fn connect(&self, _url: &Url) -> std::io::Result<Self::Io> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let cam = self.0.clone();
        tokio::spawn(async move { cam.serve(b).await });
        Ok(a)
    }
}

/// Counter handy for tests.
pub static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
