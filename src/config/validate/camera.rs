//! `[[camera]]`s.

use super::*;

const CAMERA_KEYS: &[&str] = &["name", "address", "username", "password_file"];

pub(super) fn camera(cx: &mut Cx, t: &Tbl, i: usize, devices: &mut Unique) -> Option<Camera> {
    let (name, p) = named(cx, t, "camera", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, CAMERA_KEYS);
    let address = cx.req_str(t, p, "address").and_then(|(a, loc)| {
        let rest = a.strip_prefix("http://").or_else(|| a.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Some(a.to_string()),
            _ => {
                cx.err(loc, format!("{p}.address must be the ONVIF device service URL (http:// or https://), found {a:?}"));
                None
            }
        }
    });
    let username = cx.req_str(t, p, "username").map(|(u, _)| u.to_string());
    if t.get("password_file").is_none() {
        cx.err(t.loc, format!("missing required key {p}.password_file (the camera's password, in a file readable only by cabinetd)"));
    }
    let password_file = cx.opt_path(t, p, "password_file");
    Some(Camera {
        name: name?,
        address: address?,
        username: username?,
        password_file: password_file?,
    })
}
