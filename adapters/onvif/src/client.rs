//! Typed ONVIF operations over an [`Exchange`], returning plain values ([`crate::model`]).
//!
//! Invariants:
//! - the client only ever connects to the configured device's host and port: service and
//!   subscription addresses reported by the camera contribute their *path* only (cameras report
//!   internal hosts and wrong ports, and a gateway must not be steered elsewhere);
//! - no operation that returns or fetches video, snapshots or stream URIs exists here;
//! - GetServices falls back to GetCapabilities on any fault or unusable answer (AXIS Q6045-E
//!   answers `ter:Action`, Hikvision `ter:InvalidArgVal`).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::exchange::{Auth, Call, ClockReading, Connector, Exchange, TcpConnector};
use crate::http::Url;
use crate::model::{
    self, DeviceInformation, Preset, Profile, PtzPosition, Pulled, Services, Subscription,
};
use crate::soap::{escape, ns};
use crate::time::{xsd_duration, UtcDateTime};
use crate::wsse::Credentials;

mod action {
    pub const GET_SERVICES: &str = "http://www.onvif.org/ver10/device/wsdl/GetServices";
    pub const GET_CAPABILITIES: &str = "http://www.onvif.org/ver10/device/wsdl/GetCapabilities";
    pub const GET_DEVICE_INFORMATION: &str =
        "http://www.onvif.org/ver10/device/wsdl/GetDeviceInformation";
    pub const SET_SYSTEM_DATE_AND_TIME: &str =
        "http://www.onvif.org/ver10/device/wsdl/SetSystemDateAndTime";
    pub const SYSTEM_REBOOT: &str = "http://www.onvif.org/ver10/device/wsdl/SystemReboot";
    pub const GET_PROFILES: &str = "http://www.onvif.org/ver10/media/wsdl/GetProfiles";
    pub const GET_PRESETS: &str = "http://www.onvif.org/ver20/ptz/wsdl/GetPresets";
    pub const GOTO_PRESET: &str = "http://www.onvif.org/ver20/ptz/wsdl/GotoPreset";
    pub const GET_STATUS: &str = "http://www.onvif.org/ver20/ptz/wsdl/GetStatus";
    pub const CREATE_PULL_POINT: &str =
        "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
    pub const PULL_MESSAGES: &str =
        "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
    pub const SET_SYNC_POINT: &str =
        "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/SetSynchronizationPointRequest";
    pub const RENEW: &str = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
    pub const UNSUBSCRIBE: &str =
        "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";
}

/// How a preset is named in a command: its token, or else its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetRef(pub String);

impl PresetRef {
    /// Finds the preset: an exact token match first, else a unique exact name match.
    pub fn resolve<'a>(&self, presets: &'a [Preset]) -> Result<&'a Preset> {
        let want = self.0.trim();
        if want.is_empty() {
            return Err(Error::InvalidArgument {
                field: "preset",
                reason: "empty".into(),
            });
        }
        if let Some(p) = presets.iter().find(|p| p.token == want) {
            return Ok(p);
        }
        let mut named = presets.iter().filter(|p| p.name == want);
        match (named.next(), named.next()) {
            (Some(p), None) => Ok(p),
            (Some(_), Some(_)) => Err(Error::InvalidArgument {
                field: "preset",
                reason: format!("several presets are named {want:?}; use a token"),
            }),
            (None, _) => Err(Error::InvalidArgument {
                field: "preset",
                reason: format!("no preset with token or name {want:?}"),
            }),
        }
    }
}

/// An ONVIF client for one camera.
#[derive(Debug)]
pub struct Client<C: Connector = TcpConnector> {
    ex: Exchange<C>,
    services: Option<Services>,
}

impl Client<TcpConnector> {
    /// A client over TCP for the device service at `device_url` (`http://host[:port]/path`).
    pub fn new(device_url: &str, creds: Option<Credentials>, timeout: Duration) -> Result<Self> {
        Client::with_connector(TcpConnector, device_url, creds, timeout)
    }
}

impl<C: Connector> Client<C> {
    /// A client over `connector`.
    pub fn with_connector(
        connector: C,
        device_url: &str,
        creds: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self> {
        let device = Url::parse(device_url).map_err(|reason| Error::InvalidArgument {
            field: "address",
            reason,
        })?;
        Ok(Client {
            ex: Exchange::new(connector, device, creds, timeout),
            services: None,
        })
    }

    /// The exchange (clock offset, auth scheme).
    pub fn exchange(&self) -> &Exchange<C> {
        &self.ex
    }

    /// The exchange, mutable (anonymous probes).
    pub fn exchange_mut(&mut self) -> &mut Exchange<C> {
        &mut self.ex
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.ex.timeout()
    }

    /// Service paths rebased on the configured device host and port.
    fn rebase(&self, reported: Option<&str>) -> Url {
        let dev = self.ex.device();
        match reported.and_then(|r| Url::parse(r).ok()) {
            Some(u) => Url {
                host: dev.host.clone(),
                port: dev.port,
                path: u.path,
            },
            None => dev.clone(),
        }
    }

    async fn call(
        &mut self,
        op: &'static str,
        url: &Url,
        action: &str,
        body: &str,
    ) -> Result<crate::soap::Answer> {
        self.ex
            .call(&Call {
                op,
                url,
                action,
                body,
                headers: "",
                auth: Auth::Required,
                timeout: None,
            })
            .await
    }

    /// GetSystemDateAndTime (PRE_AUTH): the camera's clock and its offset, also kept for
    /// WS-Security timestamps.
    pub async fn get_system_date_and_time(&mut self) -> Result<ClockReading> {
        self.ex.measure_clock().await
    }

    /// GetServices, falling back to GetCapabilities. Cached; [`Client::forget_services`]
    /// clears the cache (after a reboot).
    pub async fn services(&mut self) -> Result<Services> {
        if let Some(s) = &self.services {
            return Ok(s.clone());
        }
        let dev = self.ex.device().clone();
        let body = "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>";
        let s = match self
            .call("GetServices", &dev, action::GET_SERVICES, body)
            .await
        {
            Ok(a) => model::services(a.body()),
            Err(e) => Err(e),
        };
        let s = match s {
            Ok(s)
                if s.device.is_some()
                    || s.events.is_some()
                    || s.ptz.is_some()
                    || s.media.is_some() =>
            {
                s
            }
            Ok(_) | Err(Error::Fault { .. }) | Err(Error::BadAnswer { .. }) => {
                let body =
                    "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>";
                let a = self
                    .call("GetCapabilities", &dev, action::GET_CAPABILITIES, body)
                    .await?;
                model::capabilities(a.body())?
            }
            Err(e) => return Err(e),
        };
        self.services = Some(s.clone());
        Ok(s)
    }

    /// Drops the cached service list.
    pub fn forget_services(&mut self) {
        self.services = None;
    }

    /// GetDeviceInformation.
    pub async fn get_device_information(&mut self) -> Result<DeviceInformation> {
        let dev = self.ex.device().clone();
        let a = self
            .call(
                "GetDeviceInformation",
                &dev,
                action::GET_DEVICE_INFORMATION,
                "<tds:GetDeviceInformation/>",
            )
            .await?;
        model::device_information(a.body())
    }

    /// SetSystemDateAndTime, Manual, to `utc` (the cabinet's trusted time); the time zone is
    /// left as it is.
    pub async fn set_system_date_and_time(&mut self, utc: UtcDateTime) -> Result<()> {
        let dev = self.ex.device().clone();
        let body = format!(
            "<tds:SetSystemDateAndTime><tds:DateTimeType>Manual</tds:DateTimeType><tds:DaylightSavings>false</tds:DaylightSavings><tds:UTCDateTime><tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time></tds:UTCDateTime></tds:SetSystemDateAndTime>",
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
        );
        let a = self
            .call(
                "SetSystemDateAndTime",
                &dev,
                action::SET_SYSTEM_DATE_AND_TIME,
                &body,
            )
            .await?;
        match a.body() {
            Some(b) if b.is(ns::TDS, "SetSystemDateAndTimeResponse") => Ok(()),
            other => Err(Error::bad(
                "SetSystemDateAndTime",
                format!("unexpected answer {:?}", other.map(|b| b.local())),
            )),
        }
    }

    /// SystemReboot: the camera's message.
    pub async fn system_reboot(&mut self) -> Result<String> {
        let dev = self.ex.device().clone();
        let a = self
            .call(
                "SystemReboot",
                &dev,
                action::SYSTEM_REBOOT,
                "<tds:SystemReboot/>",
            )
            .await?;
        self.services = None;
        model::reboot_message(a.body())
    }

    /// Media1 GetProfiles: tokens, names and whether PTZ is configured (no URIs).
    pub async fn get_profiles(&mut self) -> Result<Vec<Profile>> {
        let s = self.services().await?;
        let url = self.rebase(s.media.as_deref());
        let a = self
            .call(
                "GetProfiles",
                &url,
                action::GET_PROFILES,
                "<trt:GetProfiles/>",
            )
            .await?;
        model::profiles(a.body())
    }

    fn ptz_url(&self, s: &Services) -> Result<Url> {
        match &s.ptz {
            Some(p) => Ok(self.rebase(Some(p))),
            None => Err(Error::Unsupported {
                op: "PTZ",
                reason: "the camera lists no PTZ service".into(),
            }),
        }
    }

    /// The profile presets apply to: the first with a PTZ configuration, else the first.
    pub async fn ptz_profile(&mut self) -> Result<String> {
        let profiles = self.get_profiles().await?;
        profiles
            .iter()
            .find(|p| p.ptz)
            .or(profiles.first())
            .map(|p| p.token.clone())
            .ok_or_else(|| Error::Unsupported {
                op: "PTZ",
                reason: "the camera has no media profile".into(),
            })
    }

    /// PTZ GetPresets of `profile`.
    pub async fn get_presets(&mut self, profile: &str) -> Result<Vec<Preset>> {
        let s = self.services().await?;
        let url = self.ptz_url(&s)?;
        let body = format!(
            "<tptz:GetPresets><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetPresets>",
            escape(profile)
        );
        let a = self
            .call("GetPresets", &url, action::GET_PRESETS, &body)
            .await?;
        model::presets(a.body())
    }

    /// PTZ GotoPreset, the preset named by token or name (checked against GetPresets, since
    /// some cameras accept unknown tokens silently). Returns the token used.
    pub async fn goto_preset(&mut self, profile: &str, preset: &PresetRef) -> Result<String> {
        let presets = self.get_presets(profile).await?;
        let token = preset.resolve(&presets)?.token.clone();
        let s = self.services().await?;
        let url = self.ptz_url(&s)?;
        let body = format!(
            "<tptz:GotoPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
            escape(profile),
            escape(&token)
        );
        let a = self
            .call("GotoPreset", &url, action::GOTO_PRESET, &body)
            .await?;
        match a.body() {
            Some(b) if b.is(ns::TPTZ, "GotoPresetResponse") => Ok(token),
            other => Err(Error::bad(
                "GotoPreset",
                format!("unexpected answer {:?}", other.map(|b| b.local())),
            )),
        }
    }

    /// PTZ GetStatus: the current position.
    pub async fn ptz_position(&mut self, profile: &str) -> Result<PtzPosition> {
        let s = self.services().await?;
        let url = self.ptz_url(&s)?;
        let body = format!(
            "<tptz:GetStatus><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
            escape(profile)
        );
        let a = self
            .call("GetStatus", &url, action::GET_STATUS, &body)
            .await?;
        model::ptz_status(a.body())
    }

    async fn events_url(&mut self) -> Result<Url> {
        let s = self.services().await?;
        // Some cameras (and the oxvif mock) leave Events out of the list but serve it on the
        // device endpoint: try there; an ActionNotSupported fault then says "no events".
        Ok(self.rebase(s.events.as_deref()))
    }

    /// CreatePullPointSubscription for `termination` (written in seconds).
    pub async fn create_pull_point_subscription(
        &mut self,
        termination: Duration,
    ) -> Result<Subscription> {
        let url = self.events_url().await?;
        let body = format!(
            "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>{}</tev:InitialTerminationTime></tev:CreatePullPointSubscription>",
            xsd_duration(termination)
        );
        let a = self
            .call(
                "CreatePullPointSubscription",
                &url,
                action::CREATE_PULL_POINT,
                &body,
            )
            .await?;
        model::subscription(a.body())
    }

    fn sub_headers(sub: &Subscription, url: &Url, action: &str) -> String {
        let mut h = format!(
            "<wsa:Action>{}</wsa:Action><wsa:To>{}</wsa:To><wsa:MessageID>urn:uuid:{}</wsa:MessageID>",
            escape(action),
            escape(&format!("http://{}{}", url.authority(), url.path)),
            uuid_v4()
        );
        for p in &sub.reference_parameters {
            match &p.ns {
                Some(n) => h.push_str(&format!(
                    r#"<rp:{l} xmlns:rp="{n}" wsa:IsReferenceParameter="true">{t}</rp:{l}>"#,
                    l = p.local,
                    n = escape(n),
                    t = escape(&p.text)
                )),
                None => h.push_str(&format!("<{l}>{t}</{l}>", l = p.local, t = escape(&p.text))),
            }
        }
        h
    }

    async fn sub_call(
        &mut self,
        op: &'static str,
        sub: &Subscription,
        action: &str,
        body: &str,
        timeout: Option<Duration>,
    ) -> Result<crate::soap::Answer> {
        let url = self.rebase(Some(&sub.address));
        let headers = Self::sub_headers(sub, &url, action);
        self.ex
            .call(&Call {
                op,
                url: &url,
                action,
                body,
                headers: &headers,
                auth: Auth::Required,
                timeout,
            })
            .await
    }

    /// PullMessages: waits up to `wait` on the camera for at most `limit` messages; the call's
    /// own timeout is `wait` plus the exchange's timeout.
    pub async fn pull_messages(
        &mut self,
        sub: &Subscription,
        wait: Duration,
        limit: u32,
    ) -> Result<Pulled> {
        let body = format!(
            "<tev:PullMessages><tev:Timeout>{}</tev:Timeout><tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>",
            xsd_duration(wait)
        );
        let timeout = Some(wait + self.ex.timeout());
        let a = self
            .sub_call("PullMessages", sub, action::PULL_MESSAGES, &body, timeout)
            .await?;
        model::pulled(a.body())
    }

    /// SetSynchronizationPoint: asks the camera to resend current property states.
    pub async fn set_synchronization_point(&mut self, sub: &Subscription) -> Result<()> {
        self.sub_call(
            "SetSynchronizationPoint",
            sub,
            action::SET_SYNC_POINT,
            "<tev:SetSynchronizationPoint/>",
            None,
        )
        .await
        .map(drop)
    }

    /// Renew for `termination`; returns the new termination time if the camera gave one.
    pub async fn renew(
        &mut self,
        sub: &Subscription,
        termination: Duration,
    ) -> Result<Option<UtcDateTime>> {
        let body = format!(
            "<wsnt:Renew><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:Renew>",
            xsd_duration(termination)
        );
        let a = self
            .sub_call("Renew", sub, action::RENEW, &body, None)
            .await?;
        Ok(a.body()
            .and_then(|b| b.child(ns::WSNT, "TerminationTime"))
            .and_then(|t| UtcDateTime::parse_xsd(t.text())))
    }

    /// Unsubscribe.
    pub async fn unsubscribe(&mut self, sub: &Subscription) -> Result<()> {
        self.sub_call(
            "Unsubscribe",
            sub,
            action::UNSUBSCRIBE,
            "<wsnt:Unsubscribe/>",
            None,
        )
        .await
        .map(drop)
    }
}

/// A random (v4) UUID for WS-Addressing MessageIDs.
pub(crate) fn uuid_v4() -> String {
    let mut b = crate::wsse::fresh_nonce();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(token: &str, name: &str) -> Preset {
        Preset {
            token: token.into(),
            name: name.into(),
        }
    }

    #[test]
    fn preset_by_token_then_unique_name() {
        let list = [
            p("1", "preset 1"),
            p("2", "preset 1"),
            p("4", "Parking"),
            p("Parking", "x"),
        ];
        assert_eq!(PresetRef("4".into()).resolve(&list).unwrap().token, "4");
        assert_eq!(
            PresetRef("Parking".into()).resolve(&list).unwrap().token,
            "Parking",
            "token wins"
        );
        assert_eq!(
            PresetRef("x".into()).resolve(&list).unwrap().token,
            "Parking"
        );
        let e = PresetRef("preset 1".into()).resolve(&list).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    field: "preset",
                    ..
                }
            ),
            "{e}"
        );
        assert!(PresetRef("nope".into()).resolve(&list).is_err());
        assert!(PresetRef(" ".into()).resolve(&list).is_err());
    }

    #[test]
    fn uuids_are_v4_shaped() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
