//! WS-Discovery (SOAP over UDP): Probe, collect ProbeMatches, de-duplicate.
//!
//! Two Probes are sent — `tds:Device` (current Core) and `dn:NetworkVideoTransmitter` (what
//! most deployed cameras answer to) — to 239.255.255.250:3702 with TTL 1, or to a unicast
//! target (a camera that is not discoverable, or a test peer). Answers come back unicast to the
//! probing socket until the timeout. Invariants: datagrams are read into a 64 KiB buffer and
//! parsed by the bounded XML reader; malformed datagrams and answers to someone else's Probe
//! are ignored silently; at most [`MAX_DEVICES`] devices, [`MAX_LIST`] entries per list;
//! devices are de-duplicated by endpoint reference (else first XAddr); XAddrs lose any
//! `user:pass@`. Discovery only lists: nothing found here is ever polled without configuration.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::client::uuid_v4;
use crate::soap::{escape, ns};
use crate::xml::{Document, El};

/// The WS-Discovery multicast group and port.
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
/// Most devices kept.
pub const MAX_DEVICES: usize = 256;
/// Most entries kept per list (types, scopes, XAddrs).
pub const MAX_LIST: usize = 32;
/// Largest datagram read.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// Where the Probe goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// The interface with this IPv4 address (`IP_MULTICAST_IF`).
    Addr(Ipv4Addr),
    /// The interface with this name (`SO_BINDTODEVICE`; may need CAP_NET_RAW).
    Name(String),
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// How long answers are collected.
    pub timeout: Duration,
    /// Outgoing interface (None: the routing table's choice).
    pub interface: Option<Interface>,
    /// Where Probes go: the multicast group, or a unicast address.
    pub target: SocketAddr,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            timeout: Duration::from_secs(3),
            interface: None,
            target: SocketAddr::V4(MULTICAST),
        }
    }
}

/// A device that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Endpoint reference address (`urn:uuid:…`), or the first XAddr when absent.
    pub endpoint: String,
    /// Types as sent (`dn:NetworkVideoTransmitter`, `tds:Device`).
    pub types: Vec<String>,
    /// Scopes (`onvif://www.onvif.org/name/…`).
    pub scopes: Vec<String>,
    /// Device service addresses, userinfo removed.
    pub xaddrs: Vec<String>,
}

/// A Probe message with `message_id`, for `types` (e.g. `dn:NetworkVideoTransmitter`; empty =
/// any type).
pub fn probe_message(message_id: &str, types: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="{env}" xmlns:a="{wsadis}" xmlns:d="{d}" xmlns:dn="{dn}" xmlns:tds="{tds}">"#,
            "<s:Header><a:MessageID>{id}</a:MessageID>",
            "<a:To s:mustUnderstand=\"1\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>",
            "<a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>",
            "</s:Header><s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"
        ),
        env = ns::ENV,
        wsadis = ns::WSADIS,
        d = ns::D,
        dn = ns::DN,
        tds = ns::TDS,
        id = escape(message_id),
        types = escape(types),
    )
}

fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..end];
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{}", &rest[end..])
        }
        None => url.to_string(),
    }
}

fn list(el: Option<El<'_>>) -> Vec<String> {
    el.map(|e| {
        e.text()
            .split_whitespace()
            .take(MAX_LIST)
            .map(|s| s.chars().take(512).collect())
            .collect()
    })
    .unwrap_or_default()
}

/// Reads the ProbeMatch entries of one datagram. Answers relating to another message than one
/// of `our_ids` are ignored (an answer without RelatesTo is accepted). Never fails: a malformed
/// datagram gives nothing.
pub fn parse_probe_matches(datagram: &[u8], our_ids: &[String]) -> Vec<Device> {
    let Ok(doc) = Document::parse(datagram) else {
        return Vec::new();
    };
    let root = doc.root();
    if !root.is(ns::ENV, "Envelope") {
        return Vec::new();
    }
    let relates = root.child(ns::ENV, "Header").and_then(|h| {
        h.child(ns::WSADIS, "RelatesTo")
            .or_else(|| h.child(ns::WSA, "RelatesTo"))
            .map(|r| r.text().to_string())
    });
    if let Some(r) = relates {
        if !our_ids.contains(&r) {
            return Vec::new();
        }
    }
    let Some(body) = root.child(ns::ENV, "Body") else {
        return Vec::new();
    };
    // ipycam sends ProbeMatch without the ProbeMatches wrapper.
    body.descendants()
        .filter(|e| e.is(ns::D, "ProbeMatch"))
        .take(MAX_DEVICES)
        .filter_map(|m| {
            let xaddrs: Vec<String> = list(m.child(ns::D, "XAddrs"))
                .iter()
                .map(|x| strip_userinfo(x))
                .collect();
            let endpoint = m
                // The standard puts it in the addressing namespace; ipycam in discovery's.
                .children()
                .find(|c| {
                    c.local() == "EndpointReference"
                        && [ns::WSADIS, ns::WSA, ns::D]
                            .iter()
                            .any(|n| c.is(n, "EndpointReference"))
                })
                .and_then(|r| {
                    r.child(ns::WSADIS, "Address")
                        .or_else(|| r.child(ns::WSA, "Address"))
                })
                .map(|a| a.text().chars().take(512).collect::<String>())
                .filter(|a| !a.is_empty())
                .or_else(|| xaddrs.first().cloned())?;
            Some(Device {
                endpoint,
                types: list(m.child(ns::D, "Types")),
                scopes: list(m.child(ns::D, "Scopes")),
                xaddrs,
            })
        })
        .collect()
}

fn socket(opts: &DiscoveryOptions) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let mut bind = Ipv4Addr::UNSPECIFIED;
    match &opts.interface {
        Some(Interface::Addr(a)) => {
            s.set_multicast_if_v4(a)?;
            bind = *a;
        }
        Some(Interface::Name(n)) => s.bind_device(Some(n.as_bytes()))?,
        None => {}
    }
    s.set_multicast_ttl_v4(1)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(bind, 0).into())?;
    UdpSocket::from_std(s.into())
}

/// Probes and collects answers for `opts.timeout`.
pub async fn discover(opts: &DiscoveryOptions) -> std::io::Result<Vec<Device>> {
    let sock = socket(opts)?;
    let ids: Vec<String> = (0..2).map(|_| format!("urn:uuid:{}", uuid_v4())).collect();
    for (id, types) in ids.iter().zip(["tds:Device", "dn:NetworkVideoTransmitter"]) {
        sock.send_to(probe_message(id, types).as_bytes(), opts.target)
            .await?;
    }
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut found: Vec<Device> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while found.len() < MAX_DEVICES {
        let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else {
            break;
        };
        let Ok((n, _from)) = r else { continue };
        for d in parse_probe_matches(&buf[..n], &ids) {
            let room = found.len() < MAX_DEVICES;
            match found.iter_mut().find(|f| f.endpoint == d.endpoint) {
                Some(f) => {
                    for (mine, theirs) in [
                        (&mut f.types, d.types),
                        (&mut f.scopes, d.scopes),
                        (&mut f.xaddrs, d.xaddrs),
                    ] {
                        for v in theirs {
                            if !mine.contains(&v) && mine.len() < MAX_LIST {
                                mine.push(v);
                            }
                        }
                    }
                }
                None if room => found.push(d),
                None => {}
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(relates: &str, wrapper: bool) -> String {
        let m = r#"<d:ProbeMatch><d:EndpointReference><a:Address>urn:uuid:cam-1</a:Address></d:EndpointReference>
            <d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>
            <d:Scopes>onvif://www.onvif.org/type/video_encoder
               onvif://www.onvif.org/name/Cam%201</d:Scopes>
            <d:XAddrs>http://admin:pw@10.0.0.5/onvif/device_service http://169.254.1.2/onvif/device_service</d:XAddrs></d:ProbeMatch>"#;
        let body = if wrapper {
            format!("<d:ProbeMatches>{m}</d:ProbeMatches>")
        } else {
            m.to_string()
        };
        format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:a="{}" xmlns:d="{}"><s:Header><a:RelatesTo>{relates}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
            ns::ENV,
            ns::WSADIS,
            ns::D
        )
    }

    #[test]
    fn parses_with_and_without_wrapper() {
        let ids = vec!["urn:uuid:1".to_string()];
        for wrapper in [true, false] {
            let d = parse_probe_matches(matches("urn:uuid:1", wrapper).as_bytes(), &ids);
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].endpoint, "urn:uuid:cam-1");
            assert_eq!(d[0].types, ["dn:NetworkVideoTransmitter", "tds:Device"]);
            assert_eq!(d[0].scopes.len(), 2);
            assert_eq!(
                d[0].xaddrs[0], "http://10.0.0.5/onvif/device_service",
                "userinfo dropped"
            );
        }
        assert!(parse_probe_matches(matches("urn:uuid:other", true).as_bytes(), &ids).is_empty());
        for junk in [&b""[..], b"<x/>", b"\x00\x01garbage", b"<!DOCTYPE x><x/>"] {
            assert!(parse_probe_matches(junk, &ids).is_empty());
        }
    }

    #[test]
    fn probe_is_valid_soap() {
        let p = probe_message("urn:uuid:abc", "dn:NetworkVideoTransmitter");
        let doc = Document::parse(p.as_bytes()).unwrap();
        let probe = doc.root().descendant(ns::D, "Probe").unwrap();
        assert_eq!(
            probe.child_text(ns::D, "Types"),
            Some("dn:NetworkVideoTransmitter")
        );
    }
}
