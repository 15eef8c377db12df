//! Real camera captures (AXIS, Hikvision, Pelco, TRENDnet; `../shared/fixtures/onvif/` beside the
//! repository, MIT, third-party — read in place, never copied): every answer goes through the
//! adapter's readers without error, and the quirks the reference names are there.
//!
//!   cargo run -p cabinetd-onvif --example captures -- DIR
//!
//! A tool, not a test: the captures are not part of the repository, and a test that passes when
//! its input is absent could not fail on CI. The adapter's own tests cover the same quirks on
//! XML written for them (`tests/support/`); this checks them against the real cameras' answers.
//! Exits 0 when every answer parses, 1 (a panic, naming the file) otherwise, 2 without a DIR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cabinetd_onvif::model;
use cabinetd_onvif::soap::Answer;
use cabinetd_onvif::EventMapper;

fn fixtures_dir() -> PathBuf {
    match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            eprintln!("usage: cargo run -p cabinetd-onvif --example captures -- DIR (e.g. ../shared/fixtures/onvif)");
            std::process::exit(2);
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
}

#[derive(Default, Debug)]
struct Count {
    envelopes: usize,
    faults: usize,
    typed: usize,
}

/// Reads a Body with the typed reader of its operation, if the client uses that operation.
fn typed(op: &str, a: &Answer) -> Option<Result<String, String>> {
    let b = a.body();
    let r = match op {
        "GetSystemDateAndTime" => model::system_date_time(b).map(|s| s.utc.to_xsd()),
        "GetDeviceInformation" => {
            model::device_information(b).map(|d| format!("{} {}", d.manufacturer, d.model))
        }
        "GetServices" => model::services(b).map(|s| format!("{s:?}")),
        "GetCapabilities" => model::capabilities(b).map(|s| format!("{s:?}")),
        "GetProfiles" => model::profiles(b).map(|p| format!("{} profiles", p.len())),
        "GetPresets" => model::presets(b).map(|p| format!("{} presets", p.len())),
        "GetStatus" => model::ptz_status(b).map(|p| format!("{p:?}")),
        "CreatePullPointSubscription" => model::subscription(b).map(|s| s.address),
        "PullMessages" => {
            model::pulled(b).map(|p| format!("{} notifications", p.notifications.len()))
        }
        "SystemReboot" => model::reboot_message(b),
        "GotoPreset" | "SetSynchronizationPoint" => Ok(String::new()),
        _ => return None,
    };
    Some(r.map_err(|e| e.to_string()))
}

fn main() {
    let dir = fixtures_dir();
    assert!(
        dir.is_dir(),
        "captures: {} is not a directory",
        dir.display()
    );
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    let mut per_vendor: BTreeMap<String, Count> = BTreeMap::new();
    let mut failures = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&dir).unwrap();
        let vendor = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .to_string();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let mut parts = name.split('.');
        let (op, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if kind == "Request" {
            continue; // what a client sends, not what it reads
        }
        let bytes = std::fs::read(f).unwrap();
        let c = per_vendor.entry(vendor).or_default();
        match (kind, Answer::parse(&bytes)) {
            ("Error", Ok(Err(fault))) => {
                c.envelopes += 1;
                c.faults += 1;
                assert!(
                    !fault.code.local.is_empty(),
                    "{}: fault without code",
                    rel.display()
                );
            }
            ("Response", Ok(Ok(a))) => {
                c.envelopes += 1;
                if let Some(r) = typed(op, &a) {
                    match r {
                        Ok(_) => c.typed += 1,
                        Err(e) => failures.push(format!("{}: {e}", rel.display())),
                    }
                }
            }
            (_, other) => failures.push(format!(
                "{}: {:?}",
                rel.display(),
                other.map(|r| r.map(|_| ()))
            )),
        }
    }
    for (v, c) in &per_vendor {
        println!(
            "captures: {v}: {} answers parsed ({} faults), {} by typed readers",
            c.envelopes, c.faults, c.typed
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(per_vendor.len(), 5, "{per_vendor:?}");
    assert!(
        per_vendor
            .values()
            .all(|c| c.envelopes > 40 && c.typed >= 5),
        "{per_vendor:?}"
    );
    documented_capture_quirks();
}

fn answer(rel: &str) -> Option<Answer> {
    let p = fixtures_dir().join(rel);
    let bytes = std::fs::read(p).ok()?;
    Some(Answer::parse(&bytes).unwrap().unwrap())
}

fn fault(rel: &str) -> Option<cabinetd_onvif::soap::Fault> {
    let bytes = std::fs::read(fixtures_dir().join(rel)).ok()?;
    Some(Answer::parse(&bytes).unwrap().unwrap_err())
}

/// Quirks named in the reference, on the real captures.
fn documented_capture_quirks() {
    // AXIS Q6045-E: GetServices faults ter:Action → GetCapabilities fallback.
    assert!(fault("axis/core/GetServices.Error.xml")
        .unwrap()
        .is_not_supported());
    // Hikvision: ter:InvalidArgVal/ter:InvalidParameter, not "unsupported".
    let f = fault("hikvision/core/GetServices.Error.xml").unwrap();
    assert!(f.has_ter("InvalidArgVal") && f.has_ter("InvalidParameter"));
    assert!(fault("trendnet/core/GetDeviceInformation.Error.xml")
        .unwrap()
        .is_not_authorized());
    assert_eq!(
        fault("hikvision/core/GetDot11Capabilities.Error.xml")
            .unwrap()
            .code
            .local,
        "Reveiver"
    );
    // Non-POSIX TZ kept as sent.
    let a = answer("hikvision/core/GetSystemDateAndTime.Response.xml").unwrap();
    let t = model::system_date_time(a.body()).unwrap();
    assert_eq!(t.utc.to_xsd(), "2018-02-27T18:28:01Z");
    assert!(t.tz.starts_with("CST7:00:00DST01:00:00"));
    // 255 presets, most unnamed.
    let a = answer("hikvision/ptz/GetPresets.Response.xml").unwrap();
    let p = model::presets(a.body()).unwrap();
    assert_eq!(p.len(), 255);
    assert!(p.iter().filter(|p| p.name.is_empty()).count() > 200);
    // Axis: subscription manager with a SubscriptionId reference parameter.
    let a = answer("axis/events/CreatePullPointSubscription.Response.xml").unwrap();
    let s = model::subscription(a.body()).unwrap();
    assert_eq!(s.reference_parameters.len(), 1);
    assert_eq!(
        (
            s.reference_parameters[0].local.as_str(),
            s.reference_parameters[0].text.as_str()
        ),
        ("SubscriptionId", "5")
    );
    // Hikvision: its own PullSubManager URL.
    let a = answer("hikvision/events/CreatePullPointSubscription.Response.xml").unwrap();
    assert!(model::subscription(a.body())
        .unwrap()
        .address
        .contains("PullSubManager_"));
    // Pelco: 10 notifications, Initialized properties; the mapper reports at most the active
    // ones.
    let a = answer("pelco/events/PullMessages.Response.xml").unwrap();
    let p = model::pulled(a.body()).unwrap();
    assert_eq!(p.notifications.len(), 10);
    assert!(p.notifications.iter().all(|n| n.topic.ns.is_some()));
    let mut m = EventMapper::new();
    let transitions: Vec<_> = p.notifications.iter().filter_map(|n| m.map(n)).collect();
    assert!(transitions.iter().all(|t| t.active), "{transitions:?}");
    println!(
        "captures: pelco PullMessages → {} tracked states, {} transitions",
        m.states().count(),
        transitions.len()
    );
}
