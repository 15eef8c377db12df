//! Plain values read from answers, and the pure readers that build them from a Body element.
//!
//! Every reader takes the first element of the SOAP Body and matches (namespace, local name).
//! Readers are lenient where cameras differ (optional elements, empty names, `NONE`
//! manufacturers, LocalDateTime without UTCDateTime) and strict where a value is needed (no
//! subscription address is an error). Text values are trimmed and bounded; URIs in profiles are
//! never read (privacy: this crate never handles stream or snapshot URIs).

use crate::error::{Error, Result};
use crate::soap::ns;
use crate::time::UtcDateTime;
use crate::xml::El;

/// Longest text value kept from an answer (names, models, tokens).
pub const MAX_TEXT: usize = 256;

fn clip(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

fn expect<'a>(body: Option<El<'a>>, op: &'static str, ns: &str, local: &str) -> Result<El<'a>> {
    match body {
        Some(b) if b.is(ns, local) => Ok(b),
        Some(b) => Err(Error::bad(
            op,
            format!("expected {local}, got {}", b.local()),
        )),
        None => Err(Error::bad(op, "empty SOAP body")),
    }
}

/// The camera's clock as reported by GetSystemDateAndTime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDateTime {
    /// The camera's UTC time.
    pub utc: UtcDateTime,
    /// True when only LocalDateTime was given and taken as UTC (a quirk worth logging).
    pub from_local: bool,
    /// `Manual` or `NTP`.
    pub date_time_type: String,
    /// The POSIX TZ string, as sent (non-POSIX strings are common).
    pub tz: String,
}

fn tt_date_time(el: El<'_>) -> Option<UtcDateTime> {
    let time = el.child(ns::TT, "Time")?;
    let date = el.child(ns::TT, "Date")?;
    let n = |e: El<'_>, l: &str| e.child_text(ns::TT, l)?.parse::<i64>().ok();
    let (y, mo, d) = (n(date, "Year")?, n(date, "Month")?, n(date, "Day")?);
    let (h, mi, s) = (n(time, "Hour")?, n(time, "Minute")?, n(time, "Second")?);
    let small = |v: i64| u8::try_from(v).ok();
    UtcDateTime::new(
        i32::try_from(y).ok()?,
        small(mo)?,
        small(d)?,
        small(h)?,
        small(mi)?,
        small(s)?,
    )
}

/// Reads a GetSystemDateAndTimeResponse.
pub fn system_date_time(body: Option<El<'_>>) -> Result<SystemDateTime> {
    const OP: &str = "GetSystemDateAndTime";
    let b = expect(body, OP, ns::TDS, "GetSystemDateAndTimeResponse")?;
    let sdt = b
        .child(ns::TDS, "SystemDateAndTime")
        .ok_or_else(|| Error::missing(OP, "SystemDateAndTime"))?;
    let utc = sdt.child(ns::TT, "UTCDateTime").and_then(tt_date_time);
    let (utc, from_local) = match utc {
        Some(u) => (u, false),
        None => (
            sdt.child(ns::TT, "LocalDateTime")
                .and_then(tt_date_time)
                .ok_or_else(|| Error::missing(OP, "valid UTCDateTime or LocalDateTime"))?,
            true,
        ),
    };
    Ok(SystemDateTime {
        utc,
        from_local,
        date_time_type: clip(sdt.child_text(ns::TT, "DateTimeType").unwrap_or("")),
        tz: clip(
            sdt.child(ns::TT, "TimeZone")
                .and_then(|t| t.child_text(ns::TT, "TZ"))
                .unwrap_or(""),
        ),
    })
}

/// Who the camera says it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInformation {
    /// Manufacturer (may be empty or `NONE` on cheap cameras).
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// Serial number.
    pub serial: String,
    /// Hardware id.
    pub hardware_id: String,
}

/// Reads a GetDeviceInformationResponse.
pub fn device_information(body: Option<El<'_>>) -> Result<DeviceInformation> {
    let b = expect(
        body,
        "GetDeviceInformation",
        ns::TDS,
        "GetDeviceInformationResponse",
    )?;
    let t = |l: &str| clip(b.child_text(ns::TDS, l).unwrap_or(""));
    Ok(DeviceInformation {
        manufacturer: t("Manufacturer"),
        model: t("Model"),
        firmware: t("FirmwareVersion"),
        serial: t("SerialNumber"),
        hardware_id: t("HardwareId"),
    })
}

/// Service addresses the client needs (None = the camera did not list that service).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Services {
    /// Device management.
    pub device: Option<String>,
    /// Media1.
    pub media: Option<String>,
    /// Media2.
    pub media2: Option<String>,
    /// PTZ.
    pub ptz: Option<String>,
    /// Events.
    pub events: Option<String>,
}

/// Reads a GetServicesResponse.
pub fn services(body: Option<El<'_>>) -> Result<Services> {
    let b = expect(body, "GetServices", ns::TDS, "GetServicesResponse")?;
    let mut s = Services::default();
    for svc in b.children_named(ns::TDS, "Service") {
        let (Some(n), Some(x)) = (
            svc.child_text(ns::TDS, "Namespace"),
            svc.child_text(ns::TDS, "XAddr"),
        ) else {
            continue;
        };
        // An XAddr may list several URLs (and line breaks); keep the first.
        let Some(x) = x.split_whitespace().next() else {
            continue;
        };
        let slot = match n {
            ns::TDS => &mut s.device,
            ns::TRT => &mut s.media,
            ns::TR2 => &mut s.media2,
            ns::TPTZ => &mut s.ptz,
            ns::TEV => &mut s.events,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(clip(x));
        }
    }
    Ok(s)
}

/// Reads a GetCapabilitiesResponse (the legacy service list).
pub fn capabilities(body: Option<El<'_>>) -> Result<Services> {
    const OP: &str = "GetCapabilities";
    let b = expect(body, OP, ns::TDS, "GetCapabilitiesResponse")?;
    let caps = b
        .child(ns::TDS, "Capabilities")
        .ok_or_else(|| Error::missing(OP, "Capabilities"))?;
    let x = |l: &str| {
        caps.child(ns::TT, l)
            .and_then(|c| c.child_text(ns::TT, "XAddr"))
            .and_then(|x| x.split_whitespace().next())
            .map(clip)
    };
    let media2 = caps
        .child(ns::TT, "Extension")
        .and_then(|e| e.descendants().find(|d| d.local() == "Media2"))
        .and_then(|m| m.child_text(ns::TT, "XAddr"))
        .and_then(|x| x.split_whitespace().next())
        .map(clip);
    Ok(Services {
        device: x("Device"),
        media: x("Media"),
        media2,
        ptz: x("PTZ"),
        events: x("Events"),
    })
}

/// A media profile, metadata only (never URIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile token.
    pub token: String,
    /// Profile name.
    pub name: String,
    /// Whether the profile has a PTZ configuration (so presets apply to it).
    pub ptz: bool,
}

/// Reads a Media1 GetProfilesResponse (Media2's `Profiles` elements are read too).
pub fn profiles(body: Option<El<'_>>) -> Result<Vec<Profile>> {
    let b = body.ok_or_else(|| Error::bad("GetProfiles", "empty SOAP body"))?;
    if b.local() != "GetProfilesResponse" {
        return Err(Error::bad(
            "GetProfiles",
            format!("expected GetProfilesResponse, got {}", b.local()),
        ));
    }
    let list = b
        .children()
        .filter(|p| p.is(ns::TRT, "Profiles") || p.is(ns::TR2, "Profiles"))
        .filter_map(|p| {
            Some(Profile {
                token: clip(p.attr("token")?),
                name: clip(
                    p.child_text(ns::TT, "Name")
                        .or_else(|| p.child_text(ns::TR2, "Name"))
                        .unwrap_or(""),
                ),
                ptz: p.child(ns::TT, "PTZConfiguration").is_some()
                    || p.child(ns::TR2, "Configurations")
                        .is_some_and(|c| c.child(ns::TR2, "PTZ").is_some()),
            })
        })
        .collect();
    Ok(list)
}

/// A PTZ preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Token (what GotoPreset takes).
    pub token: String,
    /// Name (often empty: Hikvision lists 255 presets, most unnamed).
    pub name: String,
}

/// Reads a GetPresetsResponse.
pub fn presets(body: Option<El<'_>>) -> Result<Vec<Preset>> {
    let b = expect(body, "GetPresets", ns::TPTZ, "GetPresetsResponse")?;
    Ok(b.children_named(ns::TPTZ, "Preset")
        .filter_map(|p| {
            Some(Preset {
                token: clip(p.attr("token")?),
                name: clip(p.child_text(ns::TT, "Name").unwrap_or("")),
            })
        })
        .collect())
}

/// A PTZ position (generic spaces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PtzPosition {
    /// Pan.
    pub pan: f64,
    /// Tilt.
    pub tilt: f64,
    /// Zoom.
    pub zoom: f64,
}

/// Reads a GetStatusResponse (PTZ): the position.
pub fn ptz_status(body: Option<El<'_>>) -> Result<PtzPosition> {
    const OP: &str = "GetStatus";
    let b = expect(body, OP, ns::TPTZ, "GetStatusResponse")?;
    let pos = b
        .descendant(ns::TT, "Position")
        .ok_or_else(|| Error::missing(OP, "Position"))?;
    let f = |el: Option<El<'_>>, a: &str| {
        el.and_then(|e| e.attr(a))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let pt = pos.child(ns::TT, "PanTilt");
    Ok(PtzPosition {
        pan: f(pt, "x"),
        tilt: f(pt, "y"),
        zoom: f(pos.child(ns::TT, "Zoom"), "x"),
    })
}

/// A WS-Addressing reference parameter to echo as a SOAP header (Axis `SubscriptionId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefParam {
    /// Namespace of the element.
    pub ns: Option<String>,
    /// Local name.
    pub local: String,
    /// Text content.
    pub text: String,
}

/// A pull-point subscription as the camera described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where PullMessages, Renew and Unsubscribe go (often not the events XAddr).
    pub address: String,
    /// Parameters to echo as headers.
    pub reference_parameters: Vec<RefParam>,
    /// The camera's current time, if given.
    pub current_time: Option<UtcDateTime>,
    /// When the camera will drop the subscription, if given.
    pub termination_time: Option<UtcDateTime>,
}

/// Most reference parameters kept (a camera could send thousands).
pub const MAX_REF_PARAMS: usize = 8;

/// Reads a CreatePullPointSubscriptionResponse.
pub fn subscription(body: Option<El<'_>>) -> Result<Subscription> {
    const OP: &str = "CreatePullPointSubscription";
    let b = expect(body, OP, ns::TEV, "CreatePullPointSubscriptionResponse")?;
    let r = b
        .child(ns::TEV, "SubscriptionReference")
        .ok_or_else(|| Error::missing(OP, "SubscriptionReference"))?;
    let address = r
        .child(ns::WSA, "Address")
        .map(|a| a.text())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::missing(OP, "SubscriptionReference/Address"))?;
    let reference_parameters = r
        .child(ns::WSA, "ReferenceParameters")
        .map(|rp| {
            rp.children()
                .take(MAX_REF_PARAMS)
                .map(|p| RefParam {
                    ns: p.ns().map(str::to_string),
                    local: clip(p.local()),
                    text: clip(p.text()),
                })
                .collect()
        })
        .unwrap_or_default();
    let t = |l: &str| {
        b.child(ns::WSNT, l)
            .or_else(|| b.child(ns::TEV, l))
            .and_then(|e| UtcDateTime::parse_xsd(e.text()))
    };
    Ok(Subscription {
        address: clip(address.split_whitespace().next().unwrap_or(address)),
        reference_parameters,
        current_time: t("CurrentTime"),
        termination_time: t("TerminationTime"),
    })
}

/// A topic: its namespace (tns1, a vendor's) and its path without prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Namespace of the first segment (None if the prefix was not declared).
    pub ns: Option<String>,
    /// `VideoSource/MotionAlarm`.
    pub path: String,
}

/// `Initialized`, `Changed`, `Deleted`, or absent (a plain event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyOperation {
    /// The state at subscription time (or after SetSynchronizationPoint).
    Initialized,
    /// A change.
    Changed,
    /// The property no longer exists.
    Deleted,
}

/// One notification from PullMessages.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its topic.
    pub topic: Topic,
    /// Property operation, if a property event.
    pub operation: Option<PropertyOperation>,
    /// The camera's timestamp.
    pub utc_time: Option<UtcDateTime>,
    /// Source items (`VideoSourceConfigurationToken` = …).
    pub source: Vec<(String, String)>,
    /// Data items (`State` = `true`…).
    pub data: Vec<(String, String)>,
}

/// Most notifications read from one PullMessages answer.
pub const MAX_NOTIFICATIONS: usize = 256;
/// Most items read per Source or Data.
pub const MAX_ITEMS: usize = 16;

/// A PullMessages answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// The camera's current time.
    pub current_time: Option<UtcDateTime>,
    /// The subscription's termination time.
    pub termination_time: Option<UtcDateTime>,
    /// Notifications in order.
    pub notifications: Vec<Notification>,
}

fn topic_of(t: El<'_>) -> Topic {
    let text = t.text();
    let (ns, _) = t.resolve_qname(text.split('/').next().unwrap_or(""));
    let path = text
        .split('/')
        .map(|seg| seg.rsplit(':').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join("/");
    Topic {
        ns: if text.split('/').next().unwrap_or("").contains(':') {
            ns.map(str::to_string)
        } else {
            None
        },
        path: clip(&path),
    }
}

fn items(el: Option<El<'_>>) -> Vec<(String, String)> {
    el.map(|e| {
        e.children()
            .filter(|i| i.local() == "SimpleItem")
            .take(MAX_ITEMS)
            .filter_map(|i| {
                Some((
                    clip(i.attr("Name")?),
                    clip(i.attr("Value").unwrap_or("").trim()),
                ))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Reads a PullMessagesResponse.
pub fn pulled(body: Option<El<'_>>) -> Result<Pulled> {
    let b = expect(body, "PullMessages", ns::TEV, "PullMessagesResponse")?;
    let t = |l: &str| {
        b.child(ns::TEV, l)
            .and_then(|e| UtcDateTime::parse_xsd(e.text()))
    };
    let notifications = b
        .children_named(ns::WSNT, "NotificationMessage")
        .take(MAX_NOTIFICATIONS)
        .filter_map(|n| {
            let topic = topic_of(n.child(ns::WSNT, "Topic")?);
            let msg = n.child(ns::WSNT, "Message")?.child(ns::TT, "Message");
            let operation =
                msg.and_then(|m| m.attr("PropertyOperation"))
                    .and_then(|p| match p.trim() {
                        "Initialized" => Some(PropertyOperation::Initialized),
                        "Changed" => Some(PropertyOperation::Changed),
                        "Deleted" => Some(PropertyOperation::Deleted),
                        _ => None,
                    });
            Some(Notification {
                topic,
                operation,
                utc_time: msg
                    .and_then(|m| m.attr("UtcTime"))
                    .and_then(UtcDateTime::parse_xsd),
                source: items(msg.and_then(|m| m.child(ns::TT, "Source"))),
                data: items(msg.and_then(|m| m.child(ns::TT, "Data"))),
            })
        })
        .collect();
    Ok(Pulled {
        current_time: t("CurrentTime"),
        termination_time: t("TerminationTime"),
        notifications,
    })
}

/// Reads a SystemRebootResponse: the camera's message ("Rebooting in 90 seconds").
pub fn reboot_message(body: Option<El<'_>>) -> Result<String> {
    let b = expect(body, "SystemReboot", ns::TDS, "SystemRebootResponse")?;
    Ok(clip(b.child_text(ns::TDS, "Message").unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::Answer;

    fn body(xml: &str) -> Answer {
        let env = format!(
            r#"<e:Envelope xmlns:e="{}" xmlns:tds="{}" xmlns:tt="{}" xmlns:tev="{}" xmlns:wsnt="{}" xmlns:wsa="{}" xmlns:tptz="{}" xmlns:trt="{}"><e:Body>{xml}</e:Body></e:Envelope>"#,
            ns::ENV,
            ns::TDS,
            ns::TT,
            ns::TEV,
            ns::WSNT,
            ns::WSA,
            ns::TPTZ,
            ns::TRT
        );
        Answer::parse(env.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn date_time_local_fallback_and_bad_values() {
        let a = body("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType><tt:LocalDateTime><tt:Time><tt:Hour>1</tt:Hour><tt:Minute>2</tt:Minute><tt:Second>3</tt:Second></tt:Time><tt:Date><tt:Year>2026</tt:Year><tt:Month>11</tt:Month><tt:Day>26</tt:Day></tt:Date></tt:LocalDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>");
        let s = system_date_time(a.body()).unwrap();
        assert!(s.from_local);
        assert_eq!(s.utc.to_xsd(), "2026-11-26T01:02:03Z");
        let a = body("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:UTCDateTime><tt:Time><tt:Hour>99</tt:Hour><tt:Minute>2</tt:Minute><tt:Second>3</tt:Second></tt:Time><tt:Date><tt:Year>2026</tt:Year><tt:Month>11</tt:Month><tt:Day>26</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>");
        assert!(system_date_time(a.body()).is_err());
        let a = body("<tds:GetDeviceInformationResponse/>");
        assert!(system_date_time(a.body()).is_err(), "wrong element");
    }

    #[test]
    fn pulled_topics_and_items() {
        let a = body(
            r#"<tev:PullMessagesResponse><tev:CurrentTime>2026-01-01T00:00:00</tev:CurrentTime>
          <wsnt:NotificationMessage><wsnt:Topic xmlns:v="urn:vendor">v:Foo/v:Bar</wsnt:Topic><wsnt:Message><tt:Message UtcTime="2026-01-01T00:00:01Z" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="Src" Value="1"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value=" true "/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
          <wsnt:NotificationMessage><wsnt:Topic>NoPrefix/X</wsnt:Topic><wsnt:Message/></wsnt:NotificationMessage>
        </tev:PullMessagesResponse>"#,
        );
        let p = pulled(a.body()).unwrap();
        assert_eq!(p.current_time.unwrap().to_xsd(), "2026-01-01T00:00:00Z");
        assert_eq!(p.notifications.len(), 2);
        let n = &p.notifications[0];
        assert_eq!(
            n.topic,
            Topic {
                ns: Some("urn:vendor".into()),
                path: "Foo/Bar".into()
            }
        );
        assert_eq!(n.operation, Some(PropertyOperation::Changed));
        assert_eq!(n.data, [("State".to_string(), "true".to_string())]);
        assert_eq!(p.notifications[1].topic.ns, None);
    }

    #[test]
    fn subscription_needs_an_address() {
        let a = body("<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference/></tev:CreatePullPointSubscriptionResponse>");
        assert!(subscription(a.body()).is_err());
    }
}
