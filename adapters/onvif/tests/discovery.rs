//! WS-Discovery against a test peer on 127.0.0.1 (unicast target): two cameras behind one UDP
//! port, duplicate answers, junk and someone else's answers in between.

use std::time::Duration;

use cabinetd_onvif::discovery::{discover, DiscoveryOptions};
use tokio::net::UdpSocket;

const D: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const A: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

fn matches(relates: &str, epr: &str, xaddr: &str, types: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}" xmlns:wsa="{A}" xmlns:d="{D}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><SOAP-ENV:Header><wsa:RelatesTo>{relates}</wsa:RelatesTo><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>{epr}</wsa:Address></wsa:EndpointReference><d:Types>{types}</d:Types><d:Scopes>onvif://www.onvif.org/type/Network_Video_Transmitter
onvif://www.onvif.org/name/{epr}</d:Scopes><d:XAddrs>{xaddr}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

fn message_id(probe: &str) -> Option<String> {
    let i = probe.find("MessageID>")? + "MessageID>".len();
    Some(probe[i..].split('<').next()?.to_string())
}

#[tokio::test]
async fn probes_collect_deduplicate_and_ignore_junk() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = peer.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut probes = Vec::new();
        while probes.len() < 2 {
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            let p = String::from_utf8_lossy(&buf[..n]).to_string();
            let id = message_id(&p).expect("MessageID");
            let types = p
                .split("Types>")
                .nth(1)
                .unwrap_or("")
                .split('<')
                .next()
                .unwrap_or("")
                .to_string();
            probes.push(types.clone());
            // Junk, an oversize non-XML datagram, an answer to someone else's probe, a DOCTYPE.
            for junk in [
                b"\x00\x01not xml".to_vec(),
                vec![b'<'; 60_000],
                matches(
                    "urn:uuid:someone-else",
                    "urn:uuid:intruder",
                    "http://127.0.0.9/onvif/device_service",
                    "dn:NetworkVideoTransmitter",
                )
                .into_bytes(),
                b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>".to_vec(),
            ] {
                peer.send_to(&junk, from).await.unwrap();
            }
            // Camera 1 answers both probes (a duplicate), camera 2 only the NVT one.
            peer.send_to(
                matches(
                    &id,
                    "urn:uuid:cam-1",
                    "http://user:pw@127.0.0.1:8080/onvif/device_service",
                    "dn:NetworkVideoTransmitter tds:Device",
                )
                .as_bytes(),
                from,
            )
            .await
            .unwrap();
            if types.contains("NetworkVideoTransmitter") {
                peer.send_to(matches(&id, "urn:uuid:cam-2", "http://127.0.0.1:8081/onvif/device_service http://[fe80::1]/onvif/device_service", "dn:NetworkVideoTransmitter").as_bytes(), from)
                    .await
                    .unwrap();
            }
        }
        probes
    });
    let opts = DiscoveryOptions {
        timeout: Duration::from_millis(1500),
        target,
        ..DiscoveryOptions::default()
    };
    let mut found = discover(&opts).await.unwrap();
    let probes = server.await.unwrap();
    assert_eq!(
        probes,
        ["tds:Device", "dn:NetworkVideoTransmitter"],
        "probed twice"
    );
    found.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].endpoint, "urn:uuid:cam-1");
    assert_eq!(
        found[0].xaddrs,
        ["http://127.0.0.1:8080/onvif/device_service"],
        "credentials dropped"
    );
    assert_eq!(found[0].types, ["dn:NetworkVideoTransmitter", "tds:Device"]);
    assert_eq!(found[0].scopes.len(), 2);
    assert_eq!(found[1].endpoint, "urn:uuid:cam-2");
    assert_eq!(found[1].xaddrs.len(), 2);
}

#[tokio::test]
async fn nobody_answers() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts = DiscoveryOptions {
        timeout: Duration::from_millis(300),
        target: silent.local_addr().unwrap(),
        ..DiscoveryOptions::default()
    };
    assert!(discover(&opts).await.unwrap().is_empty());
}
