//! `cabinetd onvif discover` in a private network namespace (loopback only, nothing leaves the
//! machine), against a Python WS-Discovery responder joined to the multicast group.

mod support;

use std::process::Command;

use support::*;

#[test]
fn discover_prints_one_line_per_device() {
    let peer = root().join("tests/peers/onvif_discovery_peer.py");
    // The peer answers both Probes of one run; the output is de-duplicated to one line.
    let script = format!(
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && \
         (python3 -u '{}' --probes 2 > peer.out &) && \
         i=0; while ! grep -q READY peer.out 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done; \
         exec '{}' onvif discover --interface lo --timeout 1500ms",
        peer.display(),
        cabinetd_bin().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["http://127.0.0.1:8080/onvif/device_service types=dn:NetworkVideoTransmitter,tds:Device scopes=onvif://www.onvif.org/name/peer,onvif://www.onvif.org/location/cabinet endpoint=urn:uuid:peer-cam-1"],
        "{stderr}"
    );
    assert!(stderr.contains("1 device(s) answered"), "{stderr}");
}

#[test]
fn discover_with_nobody_there_and_bad_arguments() {
    let script = format!(
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec '{}' onvif discover --interface 127.0.0.1 --timeout 200ms",
        cabinetd_bin().display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 device(s)"));
    let out = Command::new(cabinetd_bin())
        .args(["onvif", "discover", "--timeout", "2h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout"));
}
