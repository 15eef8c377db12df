//! SOAP 1.2 envelopes (pure): writing requests, reading answers and faults.
//!
//! Requests are written as text with every interpolated value escaped ([`escape`]); answers go
//! through the bounded reader of [`crate::xml`]. An answer is the first element of the Body, or
//! a [`Fault`]. SOAP 1.1 envelopes and faults are read too (some firmwares answer in 1.1).

use crate::xml::{Document, El, XmlError};

/// Namespace URIs (module docs of [`crate`] list the conventional prefixes).
pub mod ns {
    /// SOAP 1.2 envelope.
    pub const ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
    /// SOAP 1.1 envelope (read only).
    pub const ENV11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
    /// Device management (tds).
    pub const TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
    /// Media1 (trt).
    pub const TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
    /// Media2 (tr2).
    pub const TR2: &str = "http://www.onvif.org/ver20/media/wsdl";
    /// PTZ (tptz).
    pub const TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
    /// Events (tev).
    pub const TEV: &str = "http://www.onvif.org/ver10/events/wsdl";
    /// Schema types (tt).
    pub const TT: &str = "http://www.onvif.org/ver10/schema";
    /// Fault subcodes (ter).
    pub const TER: &str = "http://www.onvif.org/ver10/error";
    /// Topics (tns1).
    pub const TNS1: &str = "http://www.onvif.org/ver10/topics";
    /// WS-BaseNotification (wsnt).
    pub const WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";
    /// WS-Addressing 1.0 (wsa).
    pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
    /// WS-ResourceFramework resource faults.
    pub const WSRF_R: &str = "http://docs.oasis-open.org/wsrf/r-2";
    /// WS-Discovery (d).
    pub const D: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
    /// WS-Discovery's addressing (wsadis).
    pub const WSADIS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
    /// Network (dn).
    pub const DN: &str = "http://www.onvif.org/ver10/network/wsdl";
    /// WS-Security extension (wsse).
    pub const WSSE: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    /// WS-Security utility (wsu).
    pub const WSU: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
}

/// Escapes text for element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A SOAP 1.2 envelope around `header` and `body` (both already-escaped XML fragments using
/// the prefixes declared here: s, tds, trt, tptz, tev, tt, wsnt, wsa, wsse, wsu).
pub fn envelope(header: &str, body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="{env}" xmlns:tds="{tds}" xmlns:trt="{trt}" xmlns:tptz="{tptz}""#,
            r#" xmlns:tev="{tev}" xmlns:tt="{tt}" xmlns:wsnt="{wsnt}" xmlns:wsa="{wsa}">"#,
            "<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ),
        env = ns::ENV,
        tds = ns::TDS,
        trt = ns::TRT,
        tptz = ns::TPTZ,
        tev = ns::TEV,
        tt = ns::TT,
        wsnt = ns::WSNT,
        wsa = ns::WSA,
        header = header,
        body = body,
    )
}

/// A qualified name resolved to its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QName {
    /// Namespace URI (None when the prefix was not declared).
    pub ns: Option<String>,
    /// Local name.
    pub local: String,
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = match self.ns.as_deref() {
            Some(ns::ENV) | Some(ns::ENV11) => "env:",
            Some(ns::TER) => "ter:",
            Some(ns::WSSE) => "wsse:",
            Some(_) => "{ns}:",
            None => "",
        };
        write!(f, "{short}{}", self.local)
    }
}

/// A SOAP fault: code, subcodes (outermost first) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `env:Sender`, `env:Receiver`… (misspellings such as `env:Reveiver` are kept as sent).
    pub code: QName,
    /// Nested subcodes, outermost first (`ter:InvalidArgVal`, `ter:InvalidParameter`).
    pub subcodes: Vec<QName>,
    /// The first reason text (trimmed, at most 256 characters).
    pub reason: String,
    /// Local names of the Detail's child elements (e.g. `ResourceUnknownFault`).
    pub detail: Vec<String>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        for s in &self.subcodes {
            write!(f, "/{s}")?;
        }
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

impl Fault {
    fn any_code(&self, pred: impl Fn(&QName) -> bool) -> bool {
        std::iter::once(&self.code).chain(&self.subcodes).any(pred)
    }

    /// An authentication failure: `ter:NotAuthorized`, a WS-Security fault code
    /// (`wsse:FailedAuthentication`…), or a reason that says so (Dahua's "Wsse authorized time
    /// check failed", ipycam's "Sender not authorized").
    pub fn is_not_authorized(&self) -> bool {
        let by_code = self.any_code(|q| {
            (q.local == "NotAuthorized" && q.ns.as_deref() != Some(ns::ENV))
                || (q.ns.as_deref() == Some(ns::WSSE)
                    && matches!(
                        q.local.as_str(),
                        "FailedAuthentication"
                            | "InvalidSecurityToken"
                            | "InvalidSecurity"
                            | "FailedCheck"
                            | "MessageExpired"
                    ))
        });
        let r = self.reason.to_ascii_lowercase();
        by_code
            || r.contains("not authorized")
            || r.contains("unauthorized")
            || r.contains("authorized time check")
            || r.contains("authentication failed")
    }

    /// The subscription (or other resource) is unknown to the camera: it forgot it.
    pub fn is_resource_unknown(&self) -> bool {
        self.any_code(|q| {
            q.local.starts_with("ResourceUnknown") || q.local == "InvalidSubscription"
        }) || self.detail.iter().any(|d| d.starts_with("ResourceUnknown"))
    }

    /// The camera does not implement the operation (`ter:ActionNotSupported`, Axis's
    /// `ter:Action`, `ter:NotImplemented`…).
    pub fn is_not_supported(&self) -> bool {
        self.any_code(|q| {
            matches!(
                q.local.as_str(),
                "ActionNotSupported"
                    | "Action"
                    | "NotImplemented"
                    | "NoSuchService"
                    | "ActionNotImplemented"
            )
        }) || {
            let r = self.reason.to_ascii_lowercase();
            r.contains("not supported") || r.contains("not implemented")
        }
    }

    /// A subcode with this local name in the ONVIF error namespace (or undeclared prefix).
    pub fn has_ter(&self, local: &str) -> bool {
        self.subcodes
            .iter()
            .any(|q| q.local == local && matches!(q.ns.as_deref(), Some(ns::TER) | None))
    }
}

/// Why an answer is not a usable SOAP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The XML itself was refused.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Well-formed XML but not a SOAP envelope with a body.
    #[error("not a SOAP envelope: {0}")]
    NotSoap(String),
}

/// A parsed answer: keeps the document so the body element can be borrowed.
#[derive(Debug)]
pub struct Answer {
    doc: Document,
    has_body: bool,
}

impl Answer {
    /// Parses an answer; a Fault in the body is returned as `Err(Ok(fault))`.
    pub fn parse(bytes: &[u8]) -> Result<Result<Answer, Fault>, SoapError> {
        let doc = Document::parse(bytes)?;
        let root = doc.root();
        let env_ns = if root.is(ns::ENV, "Envelope") {
            ns::ENV
        } else if root.is(ns::ENV11, "Envelope") {
            ns::ENV11
        } else {
            return Err(SoapError::NotSoap(format!("root element is {root:?}")));
        };
        let body = root
            .child(env_ns, "Body")
            .ok_or_else(|| SoapError::NotSoap("no Body".into()))?;
        let first = body.children().next();
        if let Some(f) = first.filter(|f| f.is(env_ns, "Fault")) {
            return Ok(Err(parse_fault(f, env_ns)));
        }
        let has_body = first.is_some();
        Ok(Ok(Answer { doc, has_body }))
    }

    /// The first element of the Body (None for an empty Body).
    pub fn body(&self) -> Option<El<'_>> {
        if !self.has_body {
            return None;
        }
        let root = self.doc.root();
        let body = root
            .child(ns::ENV, "Body")
            .or_else(|| root.child(ns::ENV11, "Body"))?;
        body.children().next()
    }
}

fn parse_fault(f: El<'_>, env_ns: &str) -> Fault {
    let qn = |el: El<'_>| {
        let (n, l) = el.resolve_qname(el.text());
        QName {
            ns: n.map(str::to_string),
            local: l.to_string(),
        }
    };
    let clip = |s: &str| s.trim().chars().take(256).collect::<String>();
    if env_ns == ns::ENV11 {
        // SOAP 1.1: faultcode / faultstring / detail, unqualified.
        let code = f
            .children()
            .find(|c| c.local() == "faultcode")
            .map(qn)
            .unwrap_or(QName {
                ns: None,
                local: String::new(),
            });
        let reason = f
            .children()
            .find(|c| c.local() == "faultstring")
            .map(|c| clip(c.text()));
        let detail = f
            .children()
            .find(|c| c.local() == "detail")
            .map(|d| d.children().map(|c| c.local().to_string()).collect())
            .unwrap_or_default();
        return Fault {
            code,
            subcodes: Vec::new(),
            reason: reason.unwrap_or_default(),
            detail,
        };
    }
    let mut code = QName {
        ns: None,
        local: String::new(),
    };
    let mut subcodes = Vec::new();
    if let Some(c) = f.child(env_ns, "Code") {
        if let Some(v) = c.child(env_ns, "Value") {
            code = qn(v);
        }
        let mut cur = c.child(env_ns, "Subcode");
        // Bounded by the document depth limit.
        while let Some(s) = cur {
            if let Some(v) = s.child(env_ns, "Value") {
                subcodes.push(qn(v));
            }
            cur = s.child(env_ns, "Subcode");
        }
    }
    let reason = f
        .child(env_ns, "Reason")
        .and_then(|r| r.child(env_ns, "Text"))
        .map(|t| clip(t.text()))
        .unwrap_or_default();
    let detail = f
        .child(env_ns, "Detail")
        .map(|d| d.children().map(|c| c.local().to_string()).collect())
        .unwrap_or_default();
    Fault {
        code,
        subcodes,
        reason,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_parseable_and_escaped() {
        let body = format!("<tds:X>{}</tds:X>", escape("a<b&\"c'"));
        let xml = envelope("", &body);
        let a = Answer::parse(xml.as_bytes()).unwrap().unwrap();
        let b = a.body().unwrap();
        assert!(b.is(ns::TDS, "X"));
        assert_eq!(b.text(), "a<b&\"c'");
    }

    #[test]
    fn fault_with_nested_subcodes_and_odd_prefixes() {
        let xml = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:x="http://www.onvif.org/ver10/error"><e:Body><e:Fault>
            <e:Code><e:Value>e:Sender</e:Value><e:Subcode><e:Value>x:InvalidArgVal</e:Value>
            <e:Subcode><e:Value>x:InvalidParameter</e:Value></e:Subcode></e:Subcode></e:Code>
            <e:Reason><e:Text xml:lang="en"> the parameter value is illegal </e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#;
        let f = Answer::parse(xml.as_bytes()).unwrap().unwrap_err();
        assert_eq!(
            f.code,
            QName {
                ns: Some(ns::ENV.into()),
                local: "Sender".into()
            }
        );
        assert!(f.has_ter("InvalidArgVal") && f.has_ter("InvalidParameter"));
        assert_eq!(f.reason, "the parameter value is illegal");
        assert!(!f.is_not_authorized() && !f.is_resource_unknown());
        assert_eq!(
            f.to_string(),
            "env:Sender/ter:InvalidArgVal/ter:InvalidParameter (the parameter value is illegal)"
        );
    }

    #[test]
    fn fault_kinds() {
        let fault = |sub: &str, reason: &str, detail: &str| {
            let xml = format!(
                r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error" xmlns:wsse="{}" xmlns:wsrf-rw="http://docs.oasis-open.org/wsrf/rw-2"><Body><Fault><Code><Value>Sender</Value><Subcode><Value>{sub}</Value></Subcode></Code><Reason><Text>{reason}</Text></Reason><Detail>{detail}</Detail></Fault></Body></Envelope>"#,
                ns::WSSE
            );
            Answer::parse(xml.as_bytes()).unwrap().unwrap_err()
        };
        assert!(fault("ter:NotAuthorized", "", "").is_not_authorized());
        assert!(fault("wsse:FailedAuthentication", "", "").is_not_authorized());
        assert!(fault("ter:Other", "Wsse authorized time check failed", "").is_not_authorized());
        assert!(fault("wsrf-rw:ResourceUnknownFault", "", "").is_resource_unknown());
        assert!(
            fault("ter:InvalidArgVal", "", "<wsrf-rw:ResourceUnknownFault/>").is_resource_unknown()
        );
        assert!(fault("ter:ActionNotSupported", "", "").is_not_supported());
        assert!(fault("ter:Action", "Action failed", "").is_not_supported());
        assert!(!fault("ter:InvalidArgVal", "", "").is_not_supported());
    }

    #[test]
    fn soap11_fault_and_misspelt_code() {
        let xml = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>nope</faultstring></soap:Fault></soap:Body></soap:Envelope>"#;
        let f = Answer::parse(xml.as_bytes()).unwrap().unwrap_err();
        assert_eq!(f.code.local, "Client");
        assert_eq!(f.reason, "nope");
        let xml = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Reveiver</env:Value></env:Code></env:Fault></env:Body></env:Envelope>"#;
        let f = Answer::parse(xml.as_bytes()).unwrap().unwrap_err();
        assert_eq!(f.code.local, "Reveiver");
    }

    #[test]
    fn not_soap() {
        assert!(matches!(
            Answer::parse(b"<html><body>401</body></html>"),
            Err(SoapError::NotSoap(_))
        ));
        let empty = format!(
            r#"<s:Envelope xmlns:s="{}"><s:Body/></s:Envelope>"#,
            ns::ENV
        );
        assert!(Answer::parse(empty.as_bytes())
            .unwrap()
            .unwrap()
            .body()
            .is_none());
    }
}
