//! mTLS against a real Mosquitto running the shipped `config/mosquitto/` (TLS listener requiring
//! client certificates, identity as user name, the pattern ACL), with a CA and certificates made
//! here (rcgen): the daemon connects with a good client certificate and exports its expiry; with
//! an expired or foreign-CA certificate, or a broker certificate for another name, it does not,
//! and `/status` says why; cabinet A cannot publish under B's topics or read B's commands.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use support::{free_port, wait_until, ChildGuard, Daemon};

const PREFIX: &str = "cabinets/v1";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (certificate PEM, key PEM) for `cn`, signed by `ca`; a server certificate names `names`.
fn leaf(ca: &Ca, cn: &str, server: Option<&[&str]>, not_after: (i32, u8, u8)) -> (String, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    match server {
        Some(names) => {
            for n in names {
                p.subject_alt_names.push(match n.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*n).try_into().unwrap()),
                });
            }
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        None => p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    // The broker may drop to its own user: test keys are readable by it.
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    p
}

/// Mosquitto with the shipped config and ACL, its paths and port replaced.
struct TlsBroker {
    port: u16,
    _proc: ChildGuard,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    fn start(ca: &Ca, server_names: &[&str]) -> TlsBroker {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (cert, key) = leaf(ca, "broker", Some(server_names), (2099, 1, 1));
        let d = dir.path();
        write(d, "cabinets-ca.pem", &ca.pem);
        write(d, "broker.pem", &cert);
        write(d, "broker.key", &key);
        let root = support::root();
        let acl = std::fs::read_to_string(root.join("config/mosquitto/cabinetd.acl")).unwrap();
        write(d, "cabinetd.acl", &acl);
        let port = free_port();
        let shipped =
            std::fs::read_to_string(root.join("config/mosquitto/mosquitto.conf")).unwrap();
        let conf = shipped
            .replace("/etc/mosquitto/certs/", &format!("{}/", d.display()))
            .replace(
                "/etc/mosquitto/cabinetd.acl",
                &d.join("cabinetd.acl").display().to_string(),
            )
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"));
        assert_ne!(conf, shipped);
        let conf_path = write(d, "mosquitto.conf", &format!("{conf}\nlog_dest none\n"));
        let mut cmd = Command::new(if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        });
        cmd.arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = ChildGuard::spawn("mosquitto (TLS)", &mut cmd);
        wait_until("TLS mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        TlsBroker {
            port,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// A daemon (cabinet `test-cab`) on `mqtts://127.0.0.1:PORT` with these TLS files.
fn daemon(port: u16, ca_pem: &str, client: &(String, String)) -> Daemon {
    let files = tempfile::tempdir().unwrap();
    let ca = write(files.path(), "ca.pem", ca_pem);
    let cert = write(files.path(), "cabinet.pem", &client.0);
    let key = write(files.path(), "cabinet.key", &client.1);
    let d = Daemon::start_edited(port, "", |base| {
        base.replace("mqtt://127.0.0.1:", "mqtts://127.0.0.1:")
            .replace(
                "keep_alive = \"5s\"",
                &format!(
                    "keep_alive = \"5s\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
            )
    });
    // The files stay for the daemon's life (it re-reads them on reload).
    std::mem::forget(files);
    d
}

fn uplink_error(d: &Daemon) -> Option<String> {
    let st = d.status();
    st["uplink"]["last_error"].as_str().map(str::to_owned)
}

#[test]
fn the_daemon_connects_with_its_certificate_and_says_why_it_cannot() {
    let cas = ca("cabinets-ca");
    let broker = TlsBroker::start(&cas, &["127.0.0.1", "localhost"]);

    // A good client certificate: connected, its expiry exported.
    let good = leaf(&cas, "test-cab", None, (2031, 7, 1));
    let mut d = daemon(broker.port, &cas.pem, &good);
    wait_until(
        "the daemon to connect over mTLS",
        Duration::from_secs(20),
        || (d.status()["uplink"]["connected"] == true).then_some(()),
    );
    let metrics = d.get("/metrics").1;
    let expiry = humantime::parse_rfc3339("2031-07-01T00:00:00Z")
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metrics.contains(&format!("cabinetd_tls_cert_expiry_seconds {expiry}")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("tls"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(d.stop().success());

    // Expired, and signed by a CA the broker does not trust: refused, and /status says why.
    for (client, why) in [
        (leaf(&cas, "test-cab", None, (2021, 1, 1)), "expired"),
        (
            leaf(&ca("intruder-ca"), "test-cab", None, (2031, 1, 1)),
            "unknown CA",
        ),
    ] {
        let mut d = daemon(broker.port, &cas.pem, &client);
        let err = wait_until(
            &format!("a handshake error naming {why}"),
            Duration::from_secs(20),
            || uplink_error(&d).filter(|e| e.contains(why)),
        );
        assert!(err.contains("client certificate"), "{err}");
        assert_eq!(d.status()["uplink"]["connected"], false);
        assert!(d.stop().success());
    }

    // The daemon does not trust the broker's CA.
    let mut d = daemon(broker.port, &ca("other-ca").pem, &good);
    let err = wait_until("unknown CA of the broker", Duration::from_secs(20), || {
        uplink_error(&d).filter(|e| e.contains("unknown CA"))
    });
    assert!(err.contains("broker's certificate"), "{err}");
    assert!(d.stop().success());

    // A broker certificate for another name.
    let other = TlsBroker::start(&cas, &["broker.example"]);
    let mut d = daemon(other.port, &cas.pem, &good);
    let err = wait_until("name mismatch", Duration::from_secs(20), || {
        uplink_error(&d).filter(|e| e.contains("name mismatch"))
    });
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(d.stop().success());
}

/// (topic, payload) of every message received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A TLS MQTT client of identity `cn` recording what it receives on `filters`.
struct Client {
    client: rumqttc::Client,
    got: Received,
}

impl Client {
    fn start(port: u16, ca: &Ca, cn: &str, filters: &[&str]) -> Client {
        let (cert, key) = leaf(ca, cn, None, (2099, 1, 1));
        let tls = cabinetd::uplink::tls::client_config(
            ca.pem.as_bytes(),
            Some((cert.as_bytes(), key.as_bytes())),
        )
        .unwrap();
        let mut o = rumqttc::MqttOptions::new(format!("x-{cn}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.config),
        ));
        let (client, mut conn) = rumqttc::Client::new(o, 16);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        {
            let got = got.clone();
            let client = client.clone();
            std::thread::spawn(move || {
                let mut pending = filters.len();
                for f in &filters {
                    client.subscribe(f, rumqttc::QoS::AtLeastOnce).unwrap();
                }
                if pending == 0 {
                    let _ = ready_tx.send(());
                }
                for ev in conn.iter() {
                    match ev {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            pending -= 1;
                            if pending == 0 {
                                let _ = ready_tx.send(());
                            }
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
                            if pending == 0 =>
                        {
                            let _ = ready_tx.send(());
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            got.lock()
                                .unwrap()
                                .push((p.topic.clone(), p.payload.to_vec()));
                        }
                        Ok(_) => {}
                        // The broker went away (end of the test).
                        Err(_) => break,
                    }
                }
            });
        }
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("TLS client connected and subscribed");
        Client { client, got }
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .unwrap();
    }

    fn topics(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

#[test]
fn the_shipped_acl_confines_each_cabinet_to_its_own_topics() {
    let cas = ca("cabinets-ca");
    let broker = TlsBroker::start(&cas, &["127.0.0.1"]);
    let central = Client::start(broker.port, &cas, "central.post", &[&format!("{PREFIX}/#")]);
    // Cabinet A tries to read B's commands and desired config besides its own.
    let a = Client::start(
        broker.port,
        &cas,
        "cab-a",
        &[
            &format!("{PREFIX}/cab-a/cmd"),
            &format!("{PREFIX}/all/cmd"),
            &format!("{PREFIX}/cab-b/cmd"),
            &format!("{PREFIX}/cab-b/config/desired"),
            &format!("{PREFIX}/#"),
        ],
    );
    // A publishes as itself and as B.
    for t in [
        "cab-b/status",
        "cab-b/telemetry",
        "cab-b/cmd/result",
        "all/cmd",
        "cab-a/cmd",
    ] {
        a.publish(&format!("{PREFIX}/{t}"), "{\"forged\":true}");
    }
    a.publish(&format!("{PREFIX}/cab-a/status"), "{\"online\":true}");
    // The central post commands both cabinets.
    for t in ["cab-a/cmd", "cab-b/cmd", "cab-b/config/desired", "all/cmd"] {
        central.publish(&format!("{PREFIX}/{t}"), "{}");
    }
    // A marker last: once the central post and A saw it, everything before was delivered.
    central.publish(&format!("{PREFIX}/cab-a/cmd"), "marker");
    wait_until("the marker at cabinet A", Duration::from_secs(10), || {
        a.got
            .lock()
            .unwrap()
            .iter()
            .any(|(_, p)| p == b"marker")
            .then_some(())
    });
    wait_until(
        "A's own status at the central post",
        Duration::from_secs(10),
        || {
            central
                .topics()
                .contains(&format!("{PREFIX}/cab-a/status"))
                .then_some(())
        },
    );
    let seen_by_central = central.topics();
    for forged in [
        "cab-b/status",
        "cab-b/telemetry",
        "cab-b/cmd/result",
        "all/cmd",
        "cab-a/cmd",
    ] {
        let from_a = central
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|(t, p)| t == &format!("{PREFIX}/{forged}") && p == b"{\"forged\":true}");
        assert!(
            !from_a,
            "cabinet A could publish on {forged}: {seen_by_central:?}"
        );
    }
    let seen_by_a = a.topics();
    assert!(
        seen_by_a.contains(&format!("{PREFIX}/cab-a/cmd")),
        "{seen_by_a:?}"
    );
    assert!(
        seen_by_a.contains(&format!("{PREFIX}/all/cmd")),
        "{seen_by_a:?}"
    );
    for other in ["cab-b/cmd", "cab-b/config/desired"] {
        assert!(
            !seen_by_a.contains(&format!("{PREFIX}/{other}")),
            "cabinet A read {other}: {seen_by_a:?}"
        );
    }
}

/// Issue 12: a CA file that could not be read at start left the mqtts:// brokers out for the
/// whole run. Now SIGHUP (or the hourly reload) re-reads the TLS files and the uplink connects
/// without a restart; a renewed client certificate is picked up the same way and its expiry
/// exported at once.
#[test]
fn tls_files_fixed_or_renewed_are_used_after_sighup_without_a_restart() {
    let cas = ca("cabinets-ca");
    let broker = TlsBroker::start(&cas, &["127.0.0.1", "localhost"]);
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("ca.pem");
    let client = leaf(&cas, "test-cab", None, (2031, 7, 1));
    let cert = write(files.path(), "cabinet.pem", &client.0);
    let key = write(files.path(), "cabinet.key", &client.1);
    // A CA file that exists but holds no certificate (a missing one is a configuration error,
    // exit 78, caught by check-config): the uplink says why and waits for a SIGHUP.
    write(files.path(), "ca.pem", "not a certificate\n");
    let d = Daemon::start_edited(broker.port, "", |base| {
        base.replace("mqtt://127.0.0.1:", "mqtts://127.0.0.1:")
            .replace(
                "keep_alive = \"5s\"",
                &format!(
                    "keep_alive = \"5s\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
                    ca_path.display(),
                    cert.display(),
                    key.display()
                ),
            )
    });
    let err = uplink_error(&d).unwrap_or_default();
    assert!(
        err.contains("ca.pem"),
        "the unusable CA file is named: {err}"
    );
    assert_eq!(d.status()["uplink"]["connected"], false);

    write(files.path(), "ca.pem", &cas.pem);
    d.proc.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("connected after SIGHUP", Duration::from_secs(20), || {
        (d.status()["uplink"]["connected"] == true).then_some(())
    });
    let expiry = |d: &Daemon| {
        d.get("/metrics").1.lines().find_map(|l| {
            l.strip_prefix("cabinetd_tls_cert_expiry_seconds ")?
                .parse::<f64>()
                .ok()
        })
    };
    let t = |y: i32| {
        humantime::parse_rfc3339(&format!("{y}-07-01T00:00:00Z"))
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64
    };
    assert_eq!(expiry(&d), Some(t(2031)));

    // Renewed on disk: the next connection uses it; the metric follows at once.
    let renewed = leaf(&cas, "test-cab", None, (2033, 7, 1));
    write(files.path(), "cabinet.pem", &renewed.0);
    write(files.path(), "cabinet.key", &renewed.1);
    d.proc.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("the renewed expiry", Duration::from_secs(20), || {
        (expiry(&d) == Some(t(2033))).then_some(())
    });
    let mut d = d;
    assert!(d.stop().success());
}
