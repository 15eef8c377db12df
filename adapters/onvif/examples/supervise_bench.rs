//! 50 cameras supervised with events on: the supervising process's extra RSS and CPU.
//!
//! `cargo run --release -p cabinetd-onvif --example supervise_bench [CAMERAS] [SECONDS]`
//! (defaults 50 cameras, 60 s).
//!
//! The cameras run in a child process (this binary with `--peer N`): N HTTP listeners on
//! 127.0.0.1 that check nothing but behave like cameras where it costs the client: a
//! PullMessages is held until its Timeout unless a motion change (every 15 s per camera, phase
//! shifted) comes first. The parent measures its RSS (/proc/self/status) before building any
//! supervisor, runs one task per camera — health every 10 s (GetSystemDateAndTime, identity
//! once) and the event pump (CreatePullPointSubscription, PullMessages PT10S, Renew) — and
//! prints RSS and CPU time (/proc/self/stat, 100 ticks/s) over the window after a 10 s warm-up.

use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cabinetd_onvif::{CameraConfig, Credentials, Supervisor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the ")".
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

const ENV_OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:wsa="http://www.w3.org/2005/08/addressing" xmlns:tns1="http://www.onvif.org/ver10/topics"><s:Body>"#;

fn xsd(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

async fn camera(l: TcpListener, phase: u64) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.ends_with(b"Envelope>") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&got);
            let action = req
                .split("SOAPAction: \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            let op = action
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches("Request");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let body = match op {
                "GetSystemDateAndTime" => {
                    let t = xsd(now);
                    let (d, h) = t.split_once('T').unwrap();
                    let d: Vec<&str> = d.split('-').collect();
                    let h: Vec<&str> = h.trim_end_matches('Z').split(':').collect();
                    format!("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>", h[0], h[1], h[2], d[0], d[1], d[2])
                }
                "GetDeviceInformation" => "<tds:GetDeviceInformationResponse><tds:Manufacturer>Bench</tds:Manufacturer><tds:Model>B-1</tds:Model><tds:FirmwareVersion>1.0</tds:FirmwareVersion><tds:SerialNumber>1</tds:SerialNumber><tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>".to_string(),
                "GetServices" => "<tds:GetServicesResponse><tds:Service><tds:Namespace>http://www.onvif.org/ver10/events/wsdl</tds:Namespace><tds:XAddr>http://x/onvif/events</tds:XAddr></tds:Service></tds:GetServicesResponse>".to_string(),
                "CreatePullPointSubscription" => format!("<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://x/onvif/sub</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>", xsd(now), xsd(now + 600)),
                "PullMessages" => {
                    let wait: u64 = req.split("<tev:Timeout>PT").nth(1).and_then(|r| r.split('S').next()).and_then(|v| v.parse().ok()).unwrap_or(10);
                    // Motion toggles every 15 s (phase-shifted per camera).
                    let next = ((now + phase) / 15 + 1) * 15 - phase;
                    let until = (next - now).min(wait);
                    tokio::time::sleep(Duration::from_secs(until)).await;
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                    let msg = if now + 1 >= next {
                        let on = ((now + phase) / 15) % 2 == 0;
                        format!("<wsnt:NotificationMessage><wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">tns1:VideoSource/MotionAlarm</wsnt:Topic><wsnt:Message><tt:Message UtcTime=\"{}\" PropertyOperation=\"Changed\"><tt:Source><tt:SimpleItem Name=\"Source\" Value=\"vs1\"/></tt:Source><tt:Data><tt:SimpleItem Name=\"State\" Value=\"{on}\"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>", xsd(now))
                    } else {
                        String::new()
                    };
                    format!("<tev:PullMessagesResponse><tev:CurrentTime>{}</tev:CurrentTime><tev:TerminationTime>{}</tev:TerminationTime>{msg}</tev:PullMessagesResponse>", xsd(now), xsd(now + 600))
                }
                "Renew" => format!("<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:RenewResponse>", xsd(now + 600)),
                "SetSynchronizationPoint" => "<tev:SetSynchronizationPointResponse/>".to_string(),
                _ => "<wsnt:UnsubscribeResponse/>".to_string(),
            };
            let xml = format!("{ENV_OPEN}{body}</s:Body></s:Envelope>");
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", xml.len());
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(xml.as_bytes()).await;
        });
    }
}

fn peer(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ports = Vec::new();
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(l.local_addr().unwrap().port().to_string());
            tokio::spawn(camera(l, (i as u64 * 7) % 15));
        }
        println!("PORTS {}", ports.join(","));
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
        })
        .await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peer") {
        return peer(args[2].parse().unwrap());
    }
    let cameras: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut child = std::process::Command::new(&args[0])
        .args(["--peer", &cameras.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PORTS ")
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss0 = rss_kib();
    let (transitions, polls) = rt.block_on(async {
        let transitions = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for port in &ports {
            let cfg = CameraConfig::new(
                format!("http://127.0.0.1:{port}/onvif/device_service"),
                Some(Credentials::new("operator", "pw")),
            );
            let mut sup = Supervisor::new(cfg).unwrap();
            let mut pump = sup.event_pump().unwrap();
            let t = transitions.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(at) = pump.next_at() {
                        tokio::time::sleep_until(at).await;
                    }
                    let out = pump.step().await;
                    t.fetch_add(
                        out.transitions.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
            });
            let p = polls.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    let h = sup.poll_health().await;
                    if h.online && h.error.is_none() {
                        p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        (transitions, polls)
    });
    let rss_warm = rss_kib();
    let (c0, t0) = (cpu_ticks(), Instant::now());
    let tr0 = transitions.load(std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(seconds)).await });
    let (c1, wall) = (cpu_ticks(), t0.elapsed());
    let rss1 = rss_kib();
    let tr = transitions.load(std::sync::atomic::Ordering::Relaxed) - tr0;
    let cpu = (c1 - c0) as f64 / 100.0 / wall.as_secs_f64() * 100.0;
    println!(
        "cameras: {cameras}, window: {:.0} s after a 10 s warm-up",
        wall.as_secs_f64()
    );
    println!(
        "RSS: baseline {rss0} KiB, after warm-up {rss_warm} KiB, at end {rss1} KiB → extra {} KiB",
        rss1.saturating_sub(rss0)
    );
    println!(
        "CPU: {:.2} % of one core (user+system, supervising process only)",
        cpu
    );
    println!(
        "motion transitions in the window: {tr}; good health polls so far: {}",
        polls.load(std::sync::atomic::Ordering::Relaxed)
    );
    rt.shutdown_background();
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}
