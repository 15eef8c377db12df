//! One SOAP request → one answer, with authentication, the camera's clock and a timeout.
//!
//! Invariants:
//! - every round trip (connect, write, read) runs under the call's timeout;
//! - WS-Security `Created` is `now + offset`, the offset measured from GetSystemDateAndTime
//!   (asked without credentials first; with a token at offset 0 if the camera insists);
//! - on an authentication refusal the clock is re-measured once (anonymously) and the call
//!   retried once — only if the offset moved (≥ 2 s) or was never measured, since a retry with
//!   an unchanged clock is just one more failed login on cameras that lock accounts;
//! - HTTP Digest is used when the camera answers 401 with a Digest challenge; the winning scheme
//!   is remembered. Digest nonces are never reused: with Digest remembered, each request first
//!   goes without credentials (a 401 that is no failed login) and answers the fresh challenge;
//! - neither passwords, digests, bodies nor URL queries are ever logged.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::http::{self, digest_authorization, digest_challenge, HttpError, Response, Url};
use crate::model::{self, SystemDateTime};
use crate::soap::{envelope, Answer, SoapError};
use crate::time::{unix_seconds, UtcDateTime};
use crate::wsse::{fresh_nonce, security_header, Credentials};
use crate::xml::MAX_BODY_BYTES;

/// Opens a byte stream to a camera. Tests plug `tokio::io::duplex` ends in here.
pub trait Connector: Send + Sync + 'static {
    /// The stream type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Connects to `url`'s host and port.
    fn connect(&self, url: &Url) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

/// Plain TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Io = TcpStream;
    async fn connect(&self, url: &Url) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect((url.host.as_str(), url.port)).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// Which authentication a camera accepted last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// WS-Security UsernameToken PasswordDigest in the SOAP header.
    UsernameToken,
    /// HTTP Digest (RFC 2617, MD5).
    HttpDigest,
}

/// Whether an operation needs credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// PRE_AUTH: sent without credentials; with them only if the camera insists.
    PreAuth,
    /// Sent with credentials.
    Required,
}

/// One SOAP call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Operation name, for errors and logs.
    pub op: &'static str,
    /// Where to POST.
    pub url: &'a Url,
    /// SOAP action URI.
    pub action: &'a str,
    /// Body XML (escaped).
    pub body: &'a str,
    /// Extra SOAP header XML (WS-Addressing, reference parameters).
    pub headers: &'a str,
    /// Credentials policy.
    pub auth: Auth,
    /// Overrides the exchange's timeout (long polls).
    pub timeout: Option<Duration>,
}

/// A clock measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockReading {
    /// What the camera said.
    pub camera: SystemDateTime,
    /// Camera minus cabinet, seconds (positive: the camera is ahead).
    pub offset_s: f64,
    /// Round-trip time of the request.
    pub rtt: Duration,
}

/// The per-camera request/response session: credentials, auth scheme, clock offset.
pub struct Exchange<C: Connector = TcpConnector> {
    connector: C,
    device: Url,
    creds: Option<Credentials>,
    timeout: Duration,
    scheme: AuthScheme,
    offset_s: Option<f64>,
    max_body: usize,
}

impl<C: Connector> std::fmt::Debug for Exchange<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("device", &self.device)
            .field("creds", &self.creds)
            .field("scheme", &self.scheme)
            .field("offset_s", &self.offset_s)
            .finish()
    }
}

const GET_SYSTEM_DATE_AND_TIME: &str =
    "http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime";

impl<C: Connector> Exchange<C> {
    /// A session with the camera whose device service is `device`.
    pub fn new(connector: C, device: Url, creds: Option<Credentials>, timeout: Duration) -> Self {
        Exchange {
            connector,
            device,
            creds,
            timeout,
            scheme: AuthScheme::UsernameToken,
            offset_s: None,
            max_body: MAX_BODY_BYTES,
        }
    }

    /// The device service URL.
    pub fn device(&self) -> &Url {
        &self.device
    }

    /// The last measured clock offset (camera − cabinet, seconds).
    pub fn clock_offset(&self) -> Option<f64> {
        self.offset_s
    }

    /// The scheme that worked last.
    pub fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks GetSystemDateAndTime and stores the offset used for `Created`.
    pub async fn measure_clock(&mut self) -> Result<ClockReading> {
        let device = self.device.clone();
        let call = clock_call(&device);
        let t0 = SystemTime::now();
        let started = Instant::now();
        let answer = self.attempt(&call).await?;
        let rtt = started.elapsed();
        let camera = model::system_date_time(answer.body())?;
        let offset_s = offset(&camera, t0, SystemTime::now());
        if camera.from_local {
            tracing::debug!(camera = %self.device, "camera gave LocalDateTime only; taken as UTC");
        }
        self.offset_s = Some(offset_s);
        Ok(ClockReading {
            camera,
            offset_s,
            rtt,
        })
    }

    /// GetSystemDateAndTime without credentials, never retried with them: any HTTP answer
    /// proves the camera is up (used while credentials are known to be refused, so liveness
    /// checks cost no failed login). Updates the offset when the camera answers with its clock.
    pub async fn ping(&mut self) -> Result<(Duration, Option<f64>)> {
        let device = self.device.clone();
        let call = clock_call(&device);
        let t0 = SystemTime::now();
        let started = Instant::now();
        let resp = self.round(&call, false, None).await?;
        let rtt = started.elapsed();
        let clock = interpret(call.op, resp)
            .ok()
            .and_then(|a| model::system_date_time(a.body()).ok())
            .map(|c| offset(&c, t0, SystemTime::now()));
        if clock.is_some() {
            self.offset_s = clock;
        }
        Ok((rtt, clock))
    }

    /// Sends a call; on an authentication refusal re-measures the clock once and retries once
    /// if it moved.
    pub async fn call(&mut self, call: &Call<'_>) -> Result<Answer> {
        match self.attempt(call).await {
            Err(e) if e.is_auth() && self.creds.is_some() => {
                // Re-measured anonymously only: a camera that wants credentials for its clock
                // would count the measurement itself as one more failed login.
                let before = self.offset_s;
                match self.ping().await {
                    Ok((_, Some(now))) if before.is_none_or(|b| (b - now).abs() >= 2.0) => {
                        tracing::info!(camera = %self.device, op = call.op, offset_s = now, "authentication refused; clock re-measured, retrying once");
                        self.attempt(call).await
                    }
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    fn created(&self) -> UtcDateTime {
        let now = unix_seconds(SystemTime::now()) + self.offset_s.unwrap_or(0.0);
        UtcDateTime::from_unix(now.floor() as i64)
    }

    async fn attempt(&mut self, call: &Call<'_>) -> Result<Answer> {
        let has_creds = self.creds.is_some();
        let mut with_token =
            call.auth == Auth::Required && has_creds && self.scheme == AuthScheme::UsernameToken;
        loop {
            let resp = self.round(call, with_token, None).await?;
            let (outcome, sent_creds) = if resp.status == 401 {
                self.answer_401(call, resp).await
            } else {
                (interpret(call.op, resp), with_token)
            };
            match outcome {
                // Refused before any credentials were sent: a PRE_AUTH call the camera wants
                // authenticated (ipycam), or Digest remembered but no challenge any more. One
                // try with the UsernameToken. Once credentials were refused, no other scheme is
                // tried: each refusal is a failed login on the camera.
                Err(e) if e.is_auth() && has_creds && !sent_creds && !with_token => {
                    with_token = true;
                    self.scheme = AuthScheme::UsernameToken;
                }
                o => return o,
            }
        }
    }

    /// Answers a 401: HTTP Digest when challenged. The flag says whether credentials were sent.
    async fn answer_401(&mut self, call: &Call<'_>, resp: Response) -> (Result<Answer>, bool) {
        let challenge = digest_challenge(resp.header_values("www-authenticate"));
        let (Some(creds), Some(ch)) = (self.creds.clone(), challenge) else {
            let err = Error::Auth {
                op: call.op,
                reason: unauthorized_reason(&resp),
            };
            return (Err(err), false);
        };
        let cnonce: String = fresh_nonce().iter().map(|b| format!("{b:02x}")).collect();
        let authz = digest_authorization(&ch, &creds, "POST", &call.url.path, &cnonce);
        let resp = match self.round(call, false, Some(&authz)).await {
            Ok(r) => r,
            Err(e) => return (Err(e), true),
        };
        if resp.status == 401 {
            let err = Error::Auth {
                op: call.op,
                reason: "HTTP Digest credentials rejected (401)".into(),
            };
            return (Err(err), true);
        }
        if self.scheme != AuthScheme::HttpDigest {
            tracing::info!(camera = %self.device, "camera requires HTTP Digest; remembered");
            self.scheme = AuthScheme::HttpDigest;
        }
        (interpret(call.op, resp), true)
    }

    async fn round(
        &self,
        call: &Call<'_>,
        with_token: bool,
        authz: Option<&str>,
    ) -> Result<Response> {
        let mut header = String::from(call.headers);
        if with_token {
            if let Some(c) = &self.creds {
                header.push_str(&security_header(c, self.created(), &fresh_nonce()));
            }
        }
        let xml = envelope(&header, call.body);
        let timeout = call.timeout.unwrap_or(self.timeout);
        let op = call.op;
        let fut = async {
            let mut io = self.connector.connect(call.url).await?;
            http::post(
                &mut io,
                call.url,
                call.action,
                authz,
                xml.as_bytes(),
                self.max_body,
            )
            .await
        };
        let started = Instant::now();
        let res = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout { op, after: timeout })?;
        tracing::trace!(camera = %call.url, op, ms = started.elapsed().as_millis() as u64, "round trip");
        res.map_err(|e| match e {
            HttpError::Io(io) => Error::Io {
                op,
                source: Arc::new(io),
            },
            HttpError::BodyTooLarge { limit } => {
                Error::bad(op, format!("body larger than {limit} bytes"))
            }
            other => Error::Http {
                op,
                reason: other.to_string(),
            },
        })
    }
}

fn clock_call(device: &Url) -> Call<'_> {
    Call {
        op: "GetSystemDateAndTime",
        url: device,
        action: GET_SYSTEM_DATE_AND_TIME,
        body: "<tds:GetSystemDateAndTime/>",
        headers: "",
        auth: Auth::PreAuth,
        timeout: None,
    }
}

/// Camera minus cabinet, the cabinet's time taken at the middle of the round trip. The camera
/// truncates to the second: its true time is in [s, s+1), hence +0.5 s.
fn offset(camera: &SystemDateTime, t0: SystemTime, t1: SystemTime) -> f64 {
    camera.utc.unix() as f64 + 0.5 - (unix_seconds(t0) + unix_seconds(t1)) / 2.0
}

fn unauthorized_reason(resp: &Response) -> String {
    match Answer::parse(&resp.body) {
        Ok(Err(f)) => format!("HTTP 401, fault {f}"),
        _ if resp.header_values("www-authenticate").next().is_some() => {
            "HTTP 401 with an unsupported challenge".into()
        }
        _ if resp.body.is_empty() => "HTTP 401".into(),
        _ => "HTTP 401 (non-SOAP body, no Digest challenge)".into(),
    }
}

fn interpret(op: &'static str, resp: Response) -> Result<Answer> {
    let ok = (200..300).contains(&resp.status);
    match Answer::parse(&resp.body) {
        Ok(Ok(a)) if ok => Ok(a),
        Ok(Ok(_)) => Err(Error::bad(
            op,
            format!("HTTP {} without a fault", resp.status),
        )),
        Ok(Err(fault)) if fault.is_not_authorized() => Err(Error::Auth {
            op,
            reason: format!("fault {fault}"),
        }),
        Ok(Err(fault)) => Err(Error::Fault {
            op,
            fault: Box::new(fault),
        }),
        Err(SoapError::Xml(e)) if ok => Err(Error::bad(op, e.to_string())),
        Err(e) if ok => Err(Error::bad(op, e.to_string())),
        Err(_) => Err(Error::bad(
            op,
            format!("HTTP {} with a non-SOAP body", resp.status),
        )),
    }
}
