//! The quirk camera of `adapters/onvif/tests/support` (written from the ONVIF standard and the
//! vendor quirk list, checking digests with its own code, recording every request) served on
//! loopback from a runtime of its own, for tests that drive the daemon binary.
//!
//! Include with `#[path = "support/quirk_peer.rs"] mod quirk_peer;`.
#![allow(dead_code)]

#[path = "../../adapters/onvif/tests/support/mod.rs"]
pub mod quirk;

#[allow(unused_imports)] // each test binary uses a different subset
pub use quirk::{Hostile, QuirkCam, Quirks};

/// A quirk camera listening on 127.0.0.1 (a free port) until dropped.
pub struct QuirkPeer {
    pub cam: QuirkCam,
    rt: Option<tokio::runtime::Runtime>,
}

impl QuirkPeer {
    pub fn start(quirks: Quirks) -> QuirkPeer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cam = rt.block_on(QuirkCam::new(quirks).listen());
        QuirkPeer { cam, rt: Some(rt) }
    }

    /// The device service URL.
    pub fn url(&self) -> String {
        self.cam.url()
    }

    /// Requests whose action names video, snapshots or stream URIs (must stay empty).
    pub fn media_requests(&self) -> Vec<String> {
        self.cam
            .actions()
            .into_iter()
            .filter(|a| {
                let a = a.to_ascii_lowercase();
                a.contains("stream") || a.contains("snapshot") || a.contains("multicast")
            })
            .collect()
    }
}

impl Drop for QuirkPeer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
