//! A positioned, owned TOML tree and the merge of several files into one.
//!
//! Invariants:
//! - every value, key and table header keeps the [`Loc`] (source index, 1-based line and column)
//!   where it was written, so validation can point at it after the merge;
//! - columns count characters (not bytes), lines are split on `\n` (CRLF files work);
//! - the merge is deterministic: sources are applied in order and later keys win.
//!
//! Merge rule (documented in `config/cabinetd.example.toml`):
//! - tables merge key by key, recursively;
//! - any other value (string, number, list, …) given again replaces the earlier one whole;
//! - the top-level arrays of tables that hold named things (`[[modbus]]`, `[[dali]]`,
//!   `[[camera]]`, `[[simulator]]`, `[[rule]]`, `[[scene]]`) are concatenated: a later file ADDS
//!   entries, except that an entry whose `name` equals the name of an entry from an EARLIER file
//!   replaces that entry whole (points and groups included), keeping its place in the order. Two entries with the same name
//!   in the same file stay two entries, and validation reports the duplicate.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A position in one of the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Loc {
    /// Index of the source in the list given to the loader.
    pub src: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// A TOML value with owned data.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Table),
}

impl Val {
    /// The TOML type name used in "found …" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Int(_) => "integer",
            Val::Float(_) => "float",
            Val::Bool(_) => "boolean",
            Val::Datetime => "datetime",
            Val::Array(_) => "array",
            Val::Table(_) => "table",
        }
    }
}

/// A value and where it was written (for a table: its header, or its first key for dotted keys).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub val: Val,
    pub loc: Loc,
}

/// One `key = value` of a table.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub node: Node,
}

/// A table: entries in source order.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
    pub loc: Loc,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }
}

/// Byte offset → line/column of one text.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// 1-based line and character column of a byte offset (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let col = self.text[self.starts[line]..offset].chars().count() + 1;
        (line + 1, col)
    }
}

/// A syntax error of one source (already positioned).
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

/// Parses one source into a positioned table, or returns every syntax error the parser found.
pub(crate) fn parse(src: usize, text: &str) -> Result<Table, Vec<SyntaxError>> {
    let index = LineIndex::new(text);
    let loc_of = |offset: usize| {
        let (line, col) = index.line_col(offset);
        Loc { src, line, col }
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut out: Vec<SyntaxError> = errors
            .iter()
            .map(|e| SyntaxError {
                loc: loc_of(e.span().map_or(0, |s| s.start)),
                message: format!("invalid TOML: {}", e.message().trim()),
            })
            .collect();
        out.sort_by(|a, b| a.loc.cmp(&b.loc).then_with(|| a.message.cmp(&b.message)));
        out.dedup_by(|a, b| a.loc == b.loc && a.message == b.message);
        return Err(out);
    }
    let mut bad = Vec::new();
    let table = convert_table(doc.get_ref(), loc_of(0), &loc_of, &mut bad);
    if bad.is_empty() {
        Ok(table)
    } else {
        Err(bad)
    }
}

fn convert_table(
    t: &DeTable<'_>,
    loc: Loc,
    loc_of: &dyn Fn(usize) -> Loc,
    bad: &mut Vec<SyntaxError>,
) -> Table {
    let entries = t
        .iter()
        .map(|(k, v)| Entry {
            key: k.get_ref().to_string(),
            key_loc: loc_of(k.span().start),
            node: convert(v, loc_of, bad),
        })
        .collect();
    Table { entries, loc }
}

fn convert(
    v: &Spanned<DeValue<'_>>,
    loc_of: &dyn Fn(usize) -> Loc,
    bad: &mut Vec<SyntaxError>,
) -> Node {
    let loc = loc_of(v.span().start);
    let val = match v.get_ref() {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Val::Int(n),
            Err(_) => {
                bad.push(SyntaxError {
                    loc,
                    message: format!("integer {i} does not fit in 64 bits"),
                });
                Val::Int(0)
            }
        },
        DeValue::Float(f) => match parse_toml_float(f.as_str()) {
            Some(x) => Val::Float(x),
            None => {
                bad.push(SyntaxError {
                    loc,
                    message: format!("invalid float {f}"),
                });
                Val::Float(0.0)
            }
        },
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(_) => Val::Datetime,
        DeValue::Array(a) => Val::Array(a.iter().map(|e| convert(e, loc_of, bad)).collect()),
        DeValue::Table(t) => Val::Table(convert_table(t, loc, loc_of, bad)),
    };
    Node { val, loc }
}

fn parse_toml_float(s: &str) -> Option<f64> {
    let x: f64 = s.parse().ok()?;
    // A finite literal too large for f64 parses as infinity; only `inf` may mean infinity.
    if x.is_infinite() && !s.contains("inf") {
        None
    } else {
        Some(x)
    }
}

/// Top-level arrays of tables whose entries are named and merged by name.
pub(crate) const NAMED_ARRAYS: &[&str] =
    &["modbus", "dali", "camera", "simulator", "rule", "scene"];

fn entry_name(n: &Node) -> Option<&str> {
    match &n.val {
        Val::Table(t) => match t.get("name").map(|e| &e.node.val) {
            Some(Val::Str(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// Merges `over` (from a later source) into `base`, following the rule in the module docs.
pub(crate) fn merge(base: &mut Table, over: Table, top_level: bool) {
    for entry in over.entries {
        let Some(existing) = base.get_mut(&entry.key) else {
            base.entries.push(entry);
            continue;
        };
        match (&mut existing.node.val, entry.node.val) {
            (Val::Array(old), Val::Array(new))
                if top_level && NAMED_ARRAYS.contains(&entry.key.as_str()) =>
            {
                let src = entry.node.loc.src;
                for item in new {
                    let slot = entry_name(&item).and_then(|name| {
                        old.iter()
                            .position(|o| o.loc.src < src && entry_name(o) == Some(name))
                    });
                    match slot {
                        Some(i) => old[i] = item,
                        None => old.push(item),
                    }
                }
            }
            (Val::Table(old), Val::Table(new)) => merge(old, new, false),
            (_, val) => {
                existing.key_loc = entry.key_loc;
                existing.node = Node {
                    val,
                    loc: entry.node.loc,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(t: &'a Table, path: &[&str]) -> &'a Node {
        let mut node = &t.get(path[0]).unwrap().node;
        for k in &path[1..] {
            match &node.val {
                Val::Table(t) => node = &t.get(k).unwrap().node,
                other => panic!("not a table: {other:?}"),
            }
        }
        node
    }

    #[test]
    fn positions_are_one_based_characters() {
        let t = parse(0, "# é\n[a]\nkey = \"é\"\nx = 1\n").unwrap();
        let a = get(&t, &["a"]);
        assert_eq!((a.loc.line, a.loc.col), (2, 1));
        let e = match &a.val {
            Val::Table(t) => t.get("x").unwrap(),
            _ => unreachable!(),
        };
        assert_eq!((e.key_loc.line, e.key_loc.col), (4, 1));
        assert_eq!((e.node.loc.line, e.node.loc.col), (4, 5));
        let idx = LineIndex::new("aé b\nc");
        assert_eq!(idx.line_col(4), (1, 4));
        assert_eq!(idx.line_col(6), (2, 1));
        assert_eq!(idx.line_col(99), (2, 2));
    }

    #[test]
    fn syntax_errors_are_all_reported_sorted() {
        let errs = parse(0, "a = 1\nb = 2x\nc = \"open\n").unwrap_err();
        assert!(errs.len() >= 2, "{errs:?}");
        assert_eq!((errs[0].loc.line, errs[0].loc.col), (2, 5));
        assert!(errs.windows(2).all(|w| w[0].loc <= w[1].loc));
        let dup = parse(0, "a = 1\na = 2\n").unwrap_err();
        assert_eq!((dup[0].loc.line, dup[0].loc.col), (2, 1));
        assert!(
            dup[0].message.contains("duplicate key"),
            "{}",
            dup[0].message
        );
    }

    #[test]
    fn integers_in_any_radix_and_floats() {
        let t = parse(0, "a = 0x10\nb = 1_000\nc = -2.5e1\nd = inf\n").unwrap();
        assert!(matches!(get(&t, &["a"]).val, Val::Int(16)));
        assert!(matches!(get(&t, &["b"]).val, Val::Int(1000)));
        assert!(matches!(get(&t, &["c"]).val, Val::Float(x) if x == -25.0));
        assert!(matches!(get(&t, &["d"]).val, Val::Float(x) if x.is_infinite()));
    }

    #[test]
    fn tables_merge_key_by_key_and_scalars_are_replaced() {
        let mut a = parse(0, "[s]\nx = 1\ny = [1, 2]\n[t]\nz = 1\n").unwrap();
        let b = parse(1, "[s]\ny = [3]\nw = \"new\"\n").unwrap();
        merge(&mut a, b, true);
        assert!(matches!(get(&a, &["s", "x"]).val, Val::Int(1)));
        let y = get(&a, &["s", "y"]);
        assert!(matches!(&y.val, Val::Array(v) if v.len() == 1));
        assert_eq!(y.loc.src, 1);
        assert!(matches!(&get(&a, &["s", "w"]).val, Val::Str(s) if s == "new"));
        assert!(matches!(get(&a, &["t", "z"]).val, Val::Int(1)));
    }

    #[test]
    fn named_arrays_add_and_replace_by_name_across_files_only() {
        let mut a = parse(
            0,
            "[[modbus]]\nname = \"a\"\nunit_id = 1\n[[modbus]]\nname = \"b\"\n",
        )
        .unwrap();
        let b = parse(
            1,
            "[[modbus]]\nname = \"a\"\nunit_id = 2\n[[modbus]]\nname = \"c\"\n[[modbus]]\nname = \"c\"\n",
        )
        .unwrap();
        merge(&mut a, b, true);
        let Val::Array(items) = &get(&a, &["modbus"]).val else {
            panic!()
        };
        let names: Vec<_> = items.iter().map(|n| entry_name(n).unwrap()).collect();
        assert_eq!(names, ["a", "b", "c", "c"]);
        let Val::Table(first) = &items[0].val else {
            panic!()
        };
        assert!(matches!(
            first.get("unit_id").unwrap().node.val,
            Val::Int(2)
        ));
        assert_eq!(items[0].loc.src, 1);
    }
}
