//! Hostile answers from a "camera": how fast they are refused and what they cost in memory.
//!
//! `cargo run --release -p cabinetd-onvif --example hostile_rss [ROUNDS]`
//!
//! A local HTTP server (127.0.0.1, port 0) answers GetDeviceInformation with a billion-laughs
//! document, an external entity, 10,000-deep nesting, a 50 MB body announced by Content-Length
//! and a 50 MB chunked body. For each, the client's error, the time to refuse it (median of
//! ROUNDS, default 20) and the process RSS (current and peak, /proc/self/status) are printed.

use std::time::{Duration, Instant};

use cabinetd_onvif::{Client, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HUGE: usize = 50 * 1000 * 1000;

fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn body(kind: u8) -> Vec<u8> {
    match kind {
        0 => {
            let mut s = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
            for i in 1..10 {
                let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
                s.push_str(&format!("<!ENTITY lol{i} \"{}\">", format!("&{prev};").repeat(10)));
            }
            s.push_str("]><lolz>&lol9;</lolz>");
            s.into_bytes()
        }
        1 => b"<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/hostname\">]><e>&x;</e>".to_vec(),
        _ => format!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>{}{}</s:Body></s:Envelope>",
            "<a>".repeat(10_000),
            "</a>".repeat(10_000)
        )
        .into_bytes(),
    }
}

async fn serve(l: TcpListener, kind: std::sync::Arc<std::sync::atomic::AtomicU8>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let k = kind.load(std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"Envelope>") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let block = vec![b'A'; 64 * 1024];
            match k {
                3 => {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: {HUGE}\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    let mut sent = 0;
                    while sent < HUGE && s.write_all(&block).await.is_ok() {
                        sent += block.len();
                    }
                }
                4 => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                    let mut chunk = format!("{:x}\r\n", block.len()).into_bytes();
                    chunk.extend_from_slice(&block);
                    chunk.extend_from_slice(b"\r\n");
                    let mut sent = 0;
                    while sent < HUGE && s.write_all(&chunk).await.is_ok() {
                        sent += block.len();
                    }
                }
                k => {
                    let b = body(k);
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\n\r\n", b.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&b).await;
                }
            }
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/onvif/device_service", l.local_addr().unwrap());
    let kind = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    tokio::spawn(serve(l, kind.clone()));
    let mut c = Client::new(
        &url,
        Some(Credentials::new("u", "p")),
        Duration::from_secs(30),
    )
    .unwrap();
    let (rss0, _) = rss_kib();
    println!("baseline RSS {rss0} KiB; {rounds} rounds each");
    for (k, name) in [
        (0u8, "billion laughs"),
        (1, "external entity"),
        (2, "10,000-deep nesting"),
        (3, "50 MB Content-Length"),
        (4, "50 MB chunked"),
    ] {
        kind.store(k, std::sync::atomic::Ordering::Relaxed);
        let mut times = Vec::new();
        let mut err = String::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let e = c.get_device_information().await.expect_err("refused");
            times.push(t.elapsed());
            err = e.to_string();
        }
        times.sort();
        let (rss, peak) = rss_kib();
        println!(
            "{name:>22}: refused in {:>8.3} ms (median), RSS {rss} KiB (+{} KiB), peak {peak} KiB — {err}",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            rss.saturating_sub(rss0)
        );
    }
}
