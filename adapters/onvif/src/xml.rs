//! A bounded, namespace-aware XML reader for answers from cameras (untrusted input).
//!
//! Invariants:
//! - the input is refused before parsing when it is longer than [`Limits::max_bytes`];
//! - a DOCTYPE is an error, so no entity is ever declared; any entity reference other than the
//!   five predefined ones and character references is an error (never expanded, never fetched);
//! - element depth, element count and attributes per element are capped ([`Limits`]): the work
//!   and memory of a parse are linear in the input and bounded by the limits;
//! - elements and attributes are identified by (namespace URI, local name); prefixes only serve
//!   to resolve namespaces. An element whose prefix is *undeclared* (ipycam's PTZ answers are not
//!   namespace-well-formed) has no namespace to compare, so it matches by local name alone; an
//!   element in a *different* declared namespace never matches;
//! - text is trimmed (cameras pad values with whitespace and line breaks).
//!
//! The result is a small arena tree ([`Document`]) with parent links, so a QName found in text
//! (fault subcodes, event topics) is resolved against the namespace declarations in scope.

use std::borrow::Cow;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

/// Bounds of one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted element nesting (the root element is depth 1).
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
}

/// 1 MiB: every legitimate answer to the operations this crate sends is far below 64 KiB (the
/// largest seen is a 62 KB GetPresets with 255 presets).
pub const MAX_BODY_BYTES: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: MAX_BODY_BYTES,
            max_depth: 64,
            max_elements: 50_000,
            // Namespace declarations count: Pelco declares ~70 on its Envelope.
            max_attributes: 256,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The document is longer than the limit.
    #[error("XML document of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A DOCTYPE declaration (the door to entity expansion and external entities).
    #[error("XML DOCTYPE refused")]
    Doctype,
    /// An entity reference that is not predefined (`&lt;`…) nor a character reference.
    #[error("XML entity reference &{0}; refused")]
    Entity(String),
    /// Nesting deeper than the limit.
    #[error("XML nesting deeper than {0} elements")]
    TooDeep(usize),
    /// More elements than the limit.
    #[error("XML document has more than {0} elements")]
    TooManyElements(usize),
    /// More attributes on one element than the limit.
    #[error("XML element has more than {0} attributes")]
    TooManyAttributes(usize),
    /// Not UTF-8.
    #[error("XML document is not UTF-8")]
    NotUtf8,
    /// No root element.
    #[error("XML document has no root element")]
    Empty,
    /// Not well-formed, at a byte offset.
    #[error("malformed XML at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the input.
        offset: u64,
        /// What the parser found.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// No prefix and no default namespace.
    None,
    /// Index into `Document::uris`.
    Uri(u32),
    /// A prefix nobody declared.
    Undeclared,
}

#[derive(Debug)]
struct Attr {
    ns: Ns,
    local: String,
    value: String,
}

#[derive(Debug)]
struct Node {
    ns: Ns,
    local: String,
    parent: Option<u32>,
    children: Vec<u32>,
    attrs: Vec<Attr>,
    /// Prefix declarations made on this element (`""` = default namespace).
    decls: Vec<(String, u32)>,
    text: String,
}

/// A parsed document: an arena of elements, the first being the root.
#[derive(Debug)]
pub struct Document {
    nodes: Vec<Node>,
    uris: Vec<String>,
}

/// A borrowed element of a [`Document`].
#[derive(Clone, Copy)]
pub struct El<'a> {
    doc: &'a Document,
    idx: u32,
}

impl std::fmt::Debug for El<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{{{}}}{}>", self.ns().unwrap_or(""), self.local())
    }
}

impl Document {
    /// Parses `input` within the default [`Limits`].
    pub fn parse(input: &[u8]) -> Result<Document, XmlError> {
        Document::parse_with(input, Limits::default())
    }

    /// Parses `input` within `limits`.
    pub fn parse_with(input: &[u8], limits: Limits) -> Result<Document, XmlError> {
        if input.len() > limits.max_bytes {
            return Err(XmlError::TooLarge {
                size: input.len(),
                limit: limits.max_bytes,
            });
        }
        let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = NsReader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        let decoder = reader.decoder();
        let mut doc = Document {
            nodes: Vec::new(),
            uris: Vec::new(),
        };
        let mut stack: Vec<u32> = Vec::new();
        let mut done = false;
        loop {
            let malformed = |r: &NsReader<&[u8]>, e: &dyn std::fmt::Display| XmlError::Malformed {
                offset: r.buffer_position(),
                reason: e.to_string(),
            };
            let (res, ev) = match reader.read_resolved_event() {
                Ok((res, ev)) => (ns_of(&mut doc, res), ev),
                Err(e) => return Err(malformed(&reader, &e)),
            };
            match ev {
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if done {
                        return Err(malformed(&reader, &"content after the root element"));
                    }
                    if stack.len() >= limits.max_depth {
                        return Err(XmlError::TooDeep(limits.max_depth));
                    }
                    if doc.nodes.len() >= limits.max_elements {
                        return Err(XmlError::TooManyElements(limits.max_elements));
                    }
                    let idx = doc.nodes.len() as u32;
                    let node =
                        doc.element(&reader, e, res, stack.last().copied(), limits, decoder)?;
                    doc.nodes.push(node);
                    if let Some(&p) = stack.last() {
                        doc.nodes[p as usize].children.push(idx);
                    }
                    if matches!(ev, Event::Start(_)) {
                        stack.push(idx);
                    } else if stack.is_empty() {
                        done = true;
                    }
                }
                Event::End(_) => {
                    let idx = stack
                        .pop()
                        .ok_or_else(|| malformed(&reader, &"unmatched end tag"))?;
                    let n = &mut doc.nodes[idx as usize];
                    let trimmed = n.text.trim();
                    if trimmed.len() != n.text.len() {
                        n.text = trimmed.to_string();
                    }
                    if stack.is_empty() {
                        done = true;
                    }
                }
                Event::Text(t) => {
                    if let Some(&top) = stack.last() {
                        let s = t.xml10_content().map_err(|e| malformed(&reader, &e))?;
                        doc.nodes[top as usize].text.push_str(&s);
                    } else if !t.iter().all(u8::is_ascii_whitespace) {
                        return Err(malformed(&reader, &"text outside the root element"));
                    }
                }
                Event::CData(c) => {
                    if let Some(&top) = stack.last() {
                        let s = c.decode().map_err(|e| malformed(&reader, &e))?;
                        doc.nodes[top as usize].text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let ch = r.resolve_char_ref().map_err(|e| malformed(&reader, &e))?;
                    let name = r.decode().map_err(|e| malformed(&reader, &e))?;
                    let rep: Cow<'_, str> = match ch {
                        Some(c) => Cow::Owned(c.to_string()),
                        None => match resolve_predefined_entity(&name) {
                            Some(s) => Cow::Borrowed(s),
                            None => return Err(XmlError::Entity(name.chars().take(64).collect())),
                        },
                    };
                    if let Some(&top) = stack.last() {
                        doc.nodes[top as usize].text.push_str(&rep);
                    }
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(XmlError::Malformed {
                offset: reader.buffer_position(),
                reason: "unexpected end of document".into(),
            });
        }
        if doc.nodes.is_empty() {
            return Err(XmlError::Empty);
        }
        Ok(doc)
    }

    fn intern(&mut self, uri: &[u8]) -> u32 {
        let uri = String::from_utf8_lossy(uri);
        if let Some(i) = self.uris.iter().position(|u| *u == uri) {
            return i as u32;
        }
        self.uris.push(uri.into_owned());
        (self.uris.len() - 1) as u32
    }

    fn element(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        ns: Ns,
        parent: Option<u32>,
        limits: Limits,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<Node, XmlError> {
        let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed {
            offset: reader.buffer_position(),
            reason: e.to_string(),
        };
        let local = String::from_utf8_lossy(e.local_name().into_inner()).into_owned();
        let mut attrs = Vec::new();
        let mut decls = Vec::new();
        for (i, a) in e.attributes().with_checks(true).enumerate() {
            if i >= limits.max_attributes {
                return Err(XmlError::TooManyAttributes(limits.max_attributes));
            }
            let a = a.map_err(|e| malformed(&e))?;
            let value = a
                .decoded_and_normalized_value(XmlVersion::Implicit1_0, decoder)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                    ) => XmlError::Entity(name.chars().take(64).collect()),
                    other => malformed(&other),
                })?;
            if let Some(decl) = a.key.as_namespace_binding() {
                let prefix = match decl {
                    PrefixDeclaration::Default => String::new(),
                    PrefixDeclaration::Named(p) => String::from_utf8_lossy(p).into_owned(),
                };
                let uri = self.intern(value.as_bytes());
                decls.push((prefix, uri));
                continue;
            }
            let (res, name) = reader.resolver().resolve_attribute(a.key);
            let ans = ns_of(self, res);
            attrs.push(Attr {
                ns: ans,
                local: String::from_utf8_lossy(name.into_inner()).into_owned(),
                value: value.into_owned(),
            });
        }
        Ok(Node {
            ns,
            local,
            parent,
            children: Vec::new(),
            attrs,
            decls,
            text: String::new(),
        })
    }

    /// The root element.
    pub fn root(&self) -> El<'_> {
        El { doc: self, idx: 0 }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a parsed document has a root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn ns_of(doc: &mut Document, res: ResolveResult<'_>) -> Ns {
    match res {
        ResolveResult::Unbound => Ns::None,
        ResolveResult::Bound(ns) => Ns::Uri(doc.intern(ns.into_inner())),
        ResolveResult::Unknown(_) => Ns::Undeclared,
    }
}

impl<'a> El<'a> {
    fn node(&self) -> &'a Node {
        &self.doc.nodes[self.idx as usize]
    }

    /// The namespace URI, if the element has one (None also for an undeclared prefix).
    pub fn ns(&self) -> Option<&'a str> {
        match self.node().ns {
            Ns::Uri(i) => Some(&self.doc.uris[i as usize]),
            _ => None,
        }
    }

    /// The local name.
    pub fn local(&self) -> &'a str {
        &self.node().local
    }

    /// Whether this element is `{ns}local` (see the module docs for undeclared prefixes).
    pub fn is(&self, ns: &str, local: &str) -> bool {
        let n = self.node();
        n.local == local
            && match n.ns {
                Ns::Uri(i) => self.doc.uris[i as usize] == ns,
                Ns::Undeclared => true,
                Ns::None => false,
            }
    }

    /// The trimmed text content (children's text excluded).
    pub fn text(&self) -> &'a str {
        &self.node().text
    }

    /// The parent element.
    pub fn parent(&self) -> Option<El<'a>> {
        self.node().parent.map(|idx| El { doc: self.doc, idx })
    }

    /// Child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = El<'a>> + 'a {
        let doc = self.doc;
        self.node().children.iter().map(move |&idx| El { doc, idx })
    }

    /// Child elements `{ns}local`.
    pub fn children_named(&self, ns: &'a str, local: &'a str) -> impl Iterator<Item = El<'a>> + 'a {
        self.children().filter(move |c| c.is(ns, local))
    }

    /// The first child `{ns}local`.
    pub fn child(&self, ns: &str, local: &str) -> Option<El<'a>> {
        self.children().find(|c| c.is(ns, local))
    }

    /// The text of the first child `{ns}local`.
    pub fn child_text(&self, ns: &str, local: &str) -> Option<&'a str> {
        self.child(ns, local).map(|c| c.text())
    }

    /// The first descendant `{ns}local` in document order (self excluded).
    pub fn descendant(&self, ns: &str, local: &str) -> Option<El<'a>> {
        self.descendants().find(|d| d.is(ns, local))
    }

    /// Every descendant in document order (self excluded).
    pub fn descendants(&self) -> impl Iterator<Item = El<'a>> + 'a {
        // Arena order is document order and a subtree is contiguous: the descendants of `idx`
        // are the following nodes until the first one that is not below `idx`.
        let doc = self.doc;
        let me = self.idx;
        ((me + 1)..doc.nodes.len() as u32)
            .map(move |idx| El { doc, idx })
            .take_while(move |el| {
                let mut p = el.node().parent;
                while let Some(i) = p {
                    if i == me {
                        return true;
                    }
                    p = doc.nodes[i as usize].parent;
                }
                false
            })
    }

    /// An attribute by local name, preferring one without namespace (the usual case: `token`,
    /// `Name`, `Value`…).
    pub fn attr(&self, local: &str) -> Option<&'a str> {
        self.node()
            .attrs
            .iter()
            .find(|a| a.local == local && a.ns == Ns::None)
            .or_else(|| self.node().attrs.iter().find(|a| a.local == local))
            .map(|a| a.value.as_str())
    }

    /// The namespace bound to `prefix` (`""` = default namespace) at this element.
    pub fn resolve_prefix(&self, prefix: &str) -> Option<&'a str> {
        let mut cur = Some(*self);
        while let Some(el) = cur {
            if let Some((_, uri)) = el.node().decls.iter().find(|(p, _)| p == prefix) {
                return Some(&self.doc.uris[*uri as usize]);
            }
            cur = el.parent();
        }
        match prefix {
            "xml" => Some("http://www.w3.org/XML/1998/namespace"),
            _ => None,
        }
    }

    /// Resolves a QName written as text in this element (`ter:NotAuthorized`) to
    /// (namespace, local name); the namespace is None for an unknown prefix.
    pub fn resolve_qname(&self, qname: &'a str) -> (Option<&'a str>, &'a str) {
        match qname.split_once(':') {
            Some((p, l)) => (self.resolve_prefix(p), l),
            None => (self.resolve_prefix(""), qname),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "urn:a";

    #[test]
    fn namespaces_not_prefixes() {
        let d = Document::parse(
            br#"<?xml version="1.0"?><x:r xmlns:x="urn:a" xmlns="urn:a"><y:c xmlns:y="urn:b"/>
            <MC1:c xmlns:MC1="urn:a">  hi &amp; &#x41; </MC1:c><c>two</c></x:r>"#,
        )
        .unwrap();
        let r = d.root();
        assert!(r.is(A, "r"));
        let cs: Vec<_> = r.children_named(A, "c").map(|c| c.text()).collect();
        assert_eq!(cs, ["hi & A", "two"], "the urn:b element never matches");
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn undeclared_prefix_matches_by_local_name() {
        let d = Document::parse(b"<ptz:R><tt:Name>x</tt:Name></ptz:R>").unwrap();
        assert!(d.root().is("urn:whatever", "R"));
        assert_eq!(d.root().child_text(A, "Name"), Some("x"));
    }

    #[test]
    fn qname_text_resolves_in_scope() {
        let d =
            Document::parse(br#"<a xmlns:t="urn:t"><b><v>t:Bad</v><w>u:X</w></b></a>"#).unwrap();
        let b = d.root().child("", "b");
        assert!(
            b.is_none(),
            "no namespace is not the empty-string namespace"
        );
        let v = d.root().descendants().find(|e| e.local() == "v").unwrap();
        assert_eq!(v.resolve_qname(v.text()), (Some("urn:t"), "Bad"));
        let w = d.root().descendants().find(|e| e.local() == "w").unwrap();
        assert_eq!(w.resolve_qname(w.text()), (None, "X"));
    }

    #[test]
    fn descendants_stay_in_subtree() {
        let d = Document::parse(b"<r><a><b/><c/></a><d/></r>").unwrap();
        let a = d.root().children().next().unwrap();
        let names: Vec<_> = a.descendants().map(|e| e.local()).collect();
        assert_eq!(names, ["b", "c"]);
        let all: Vec<_> = d.root().descendants().map(|e| e.local()).collect();
        assert_eq!(all, ["a", "b", "c", "d"]);
    }

    #[test]
    fn hostile_inputs_are_refused() {
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(Document::parse(laughs).unwrap_err(), XmlError::Doctype);
        let ext = br#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/hostname">]><r>&x;</r>"#;
        assert_eq!(Document::parse(ext).unwrap_err(), XmlError::Doctype);
        assert_eq!(
            Document::parse(b"<r>&x;</r>").unwrap_err(),
            XmlError::Entity("x".into())
        );
        assert_eq!(
            Document::parse(b"<r a='&x;'/>").unwrap_err(),
            XmlError::Entity("x".into())
        );
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        assert_eq!(
            Document::parse(deep.as_bytes()).unwrap_err(),
            XmlError::TooDeep(64)
        );
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            Document::parse(&big),
            Err(XmlError::TooLarge { .. })
        ));
        let many = "<r>".to_string() + &"<a/>".repeat(60_000) + "</r>";
        let lim = Limits {
            max_bytes: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            Document::parse_with(many.as_bytes(), lim).unwrap_err(),
            XmlError::TooManyElements(50_000)
        );
        let attrs = format!(
            "<r {}/>",
            (0..300)
                .map(|i| format!("a{i}='1'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            Document::parse(attrs.as_bytes()).unwrap_err(),
            XmlError::TooManyAttributes(256)
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            &b""[..],
            b"   ",
            b"<a>",
            b"<a></b>",
            b"<a/><b/>",
            b"text",
            b"\xff\xfe<a/>",
            b"<a x='1' x='2'/>",
        ] {
            assert!(
                Document::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
