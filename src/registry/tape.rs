//! An event's `data` as a flat tape for the validator, instead of a `serde_json::Value` tree.
//!
//! A tree costs an allocation per object, per member name and per string value, on every event;
//! the tape is one vector of entries per worker thread, reused, and strings without escapes are
//! spans of `data` itself. serde_json still does the parsing (the tape is built from its visitor
//! calls), so numbers, escapes and error messages are exactly serde_json's.
//!
//! The validator's view of a document must be the tree's: an object whose members repeat a name
//! is first read into the tree (where the last one wins) and written out again, and only that is
//! put on a tape. So on a tape every object's names are distinct, and large objects get a sorted
//! index so that a lookup is a binary search, not a scan (a schema's `properties` look up each of
//! theirs in every event).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use jsonschema::json::{cmp, Array, Json, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The representation jsonschema validates (`jsonschema::Validator<TapeJson>`).
pub struct TapeJson;

/// Objects up to this many members are scanned; larger ones get a sorted index.
const SCANNED: u32 = 8;
const NO_INDEX: u32 = u32::MAX;
/// A tape this much larger than usual is not kept for the next event on its thread.
const KEEP_ENTRIES: usize = 16 * 1024;
const KEEP_TEXT: usize = 256 * 1024;

enum Entry {
    Null,
    Bool(bool),
    Number(Number),
    /// Bytes `start..end` of `data` or, when `owned` (it had escapes), of the tape's `text`.
    Str {
        start: u32,
        end: u32,
        owned: bool,
    },
    /// `len` elements follow; `end` is the index after the last of them.
    Array {
        len: u32,
        end: u32,
    },
    /// `len` members follow, each a name (a `Str`) then its value. `index`: where the names'
    /// entry indices, sorted by name, start in `Tape::index`, or `NO_INDEX` for small objects.
    Object {
        len: u32,
        end: u32,
        index: u32,
    },
}

/// Reusable storage for documents.
#[derive(Default)]
pub struct Tape {
    entries: Vec<Entry>,
    /// Strings that had escapes, unescaped.
    text: String,
    index: Vec<u32>,
    /// The names of the objects still open while building (a stack), for `close_object`.
    names: Vec<u32>,
}

/// A document on a tape: the entries and the `data` their spans point into.
pub struct Doc<'a> {
    tape: &'a Tape,
    src: &'a str,
}

impl Tape {
    fn clear(&mut self) {
        self.entries.clear();
        self.text.clear();
        self.index.clear();
        self.names.clear();
    }

    /// Puts `data` on the tape, or says why it cannot go there as it is (`Ok(None)`: it is
    /// not UTF-8, or an object repeats a name).
    fn fill<'a>(&'a mut self, data: &'a [u8]) -> Result<Option<Doc<'a>>, serde_json::Error> {
        let Ok(src) = std::str::from_utf8(data) else {
            return Ok(None);
        };
        self.clear();
        let mut builder = Builder {
            tape: self,
            src,
            repeated: false,
        };
        let mut de = serde_json::Deserializer::from_str(src);
        (&mut builder).deserialize(&mut de)?;
        de.end()?;
        if builder.repeated {
            return Ok(None);
        }
        Ok(Some(Doc { tape: self, src }))
    }

    fn trim(&mut self) {
        if self.entries.capacity() > KEEP_ENTRIES {
            self.entries = Vec::new();
        }
        if self.text.capacity() > KEEP_TEXT {
            self.text = String::new();
        }
        if self.index.capacity() > KEEP_ENTRIES {
            self.index = Vec::new();
        }
        if self.names.capacity() > KEEP_ENTRIES {
            self.names = Vec::new();
        }
    }
}

thread_local! {
    static TAPE: RefCell<Tape> = RefCell::new(Tape::default());
}

/// Calls `f` with `data` (absent: `null`) as a document, on this thread's tape. The error is
/// serde_json's, as `serde_json::from_slice::<Value>` would report it.
pub fn with_document<T>(
    data: Option<&[u8]>,
    f: impl FnOnce(TapeNode<'_>) -> T,
) -> Result<T, serde_json::Error> {
    TAPE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut tape) => {
            let result = on_tape(&mut tape, data, f);
            tape.trim();
            result
        }
        // Only if `f` itself validated again on this thread; a tape of its own then.
        Err(_) => on_tape(&mut Tape::default(), data, f),
    })
}

fn on_tape<T>(
    tape: &mut Tape,
    data: Option<&[u8]>,
    f: impl FnOnce(TapeNode<'_>) -> T,
) -> Result<T, serde_json::Error> {
    let data = data.unwrap_or(b"null");
    if let Some(doc) = tape.fill(data)? {
        return Ok(f(doc.root()));
    }
    // Not UTF-8 (serde_json says where) or a repeated name: the tree decides, as it always
    // did, and what it holds goes on the tape.
    let value: Value = serde_json::from_slice(data)?;
    let canonical = serde_json::to_string(&value)?;
    let doc = tape
        .fill(canonical.as_bytes())?
        .expect("serde_json writes UTF-8 objects with distinct names");
    Ok(f(doc.root()))
}

impl<'a> Doc<'a> {
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode { doc: self, at: 0 }
    }

    fn text(&self, start: u32, end: u32, owned: bool) -> &'a str {
        let range = start as usize..end as usize;
        if owned {
            &self.tape.text[range]
        } else {
            &self.src[range]
        }
    }

    /// The index after the subtree at `at`.
    fn after(&self, at: u32) -> u32 {
        match self.tape.entries[at as usize] {
            Entry::Array { end, .. } | Entry::Object { end, .. } => end,
            _ => at + 1,
        }
    }

    fn name(&self, at: u32) -> &'a str {
        match self.tape.entries[at as usize] {
            Entry::Str { start, end, owned } => self.text(start, end, owned),
            _ => unreachable!("a member name is a string entry"),
        }
    }
}

/// Builds a tape from serde_json's visitor calls.
struct Builder<'t, 's> {
    tape: &'t mut Tape,
    src: &'s str,
    repeated: bool,
}

impl Builder<'_, '_> {
    fn push(&mut self, entry: Entry) {
        self.tape.entries.push(entry);
    }

    fn position(&self) -> u32 {
        // `data` is bounded by the body limit, far below 4 GiB.
        u32::try_from(self.tape.entries.len()).expect("a document of fewer than 2^32 entries")
    }

    fn owned(&mut self, s: &str) {
        let start = self.tape.text.len() as u32;
        self.tape.text.push_str(s);
        let end = self.tape.text.len() as u32;
        self.push(Entry::Str {
            start,
            end,
            owned: true,
        });
    }

    /// Indexes the object whose names are `names[mark..]`, and notes a name that repeats.
    fn close_object(&mut self, mark: usize) -> u32 {
        let Tape {
            entries,
            text,
            index,
            names,
        } = &mut *self.tape;
        let name = |at: u32| name_bytes(entries, text, self.src, at);
        let object = &names[mark..];
        let found = if object.len() <= SCANNED as usize {
            let repeated = object.iter().enumerate().any(|(i, &a)| {
                let a = name(a);
                object[i + 1..].iter().any(|&b| name(b) == a)
            });
            self.repeated |= repeated;
            NO_INDEX
        } else {
            let start = index.len();
            index.extend_from_slice(object);
            let sorted = &mut index[start..];
            sorted.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
            self.repeated |= sorted.windows(2).any(|w| name(w[0]) == name(w[1]));
            start as u32
        };
        names.truncate(mark);
        found
    }
}

/// The bytes of the name (a string entry) at `at`; bytes, not `str`, so that comparing them
/// costs no character-boundary checks (and bytes order as code points do).
fn name_bytes<'a>(entries: &[Entry], text: &'a str, src: &'a str, at: u32) -> &'a [u8] {
    match entries[at as usize] {
        Entry::Str { start, end, owned } => {
            let s = if owned { text } else { src };
            &s.as_bytes()[start as usize..end as usize]
        }
        _ => unreachable!("a member name is a string entry"),
    }
}

impl<'de> DeserializeSeed<'de> for &mut Builder<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Builder<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.push(Entry::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(Entry::Bool(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(Entry::Number(v.into()));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(Entry::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json's parser yields finite numbers only; the tree would hold `null` otherwise.
        self.push(Number::from_f64(v).map_or(Entry::Null, Entry::Number));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        // A string with no escapes is a slice of `data`: keep where it is.
        let start = (v.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        if start <= self.src.len() && v.len() <= self.src.len() - start {
            self.push(Entry::Str {
                start: start as u32,
                end: (start + v.len()) as u32,
                owned: false,
            });
        } else {
            self.owned(v);
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.owned(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.position();
        self.push(Entry::Array { len: 0, end: 0 });
        let mut len = 0;
        while seq.next_element_seed(&mut *self)?.is_some() {
            len += 1;
        }
        let end = self.position();
        self.tape.entries[at as usize] = Entry::Array { len, end };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.position();
        self.push(Entry::Object {
            len: 0,
            end: 0,
            index: NO_INDEX,
        });
        let mark = self.tape.names.len();
        let mut len = 0;
        loop {
            let name = self.position();
            if map.next_key_seed(&mut *self)?.is_none() {
                break;
            }
            self.tape.names.push(name);
            map.next_value_seed(&mut *self)?;
            len += 1;
        }
        let end = self.position();
        let index = self.close_object(mark);
        self.tape.entries[at as usize] = Entry::Object { len, end, index };
        Ok(())
    }
}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = Tape;

    // Small objects are scanned either way; large ones are a binary search per lookup.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        buffer: &mut Tape,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        buffer.clear();
        buffer.text.push_str(string);
        buffer.entries.push(Entry::Str {
            start: 0,
            end: string.len() as u32,
            owned: true,
        });
        let doc = Doc {
            tape: buffer,
            src: "",
        };
        f(doc.root())
    }
}

/// One value of a document.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    doc: &'a Doc<'a>,
    at: u32,
}

impl<'a> TapeNode<'a> {
    fn entry(&self) -> &'a Entry {
        &self.doc.tape.entries[self.at as usize]
    }

    fn str(&self) -> Option<&'a str> {
        match *self.entry() {
            Entry::Str { start, end, owned } => Some(self.doc.text(start, end, owned)),
            _ => None,
        }
    }

    /// The value as a tree: for error messages and the rare keyword that needs one.
    pub fn to_tree(&self) -> Value {
        match self.entry() {
            Entry::Null => Value::Null,
            Entry::Bool(b) => Value::Bool(*b),
            Entry::Number(n) => Value::Number(n.clone()),
            Entry::Str { .. } => Value::String(self.str().unwrap_or_default().to_owned()),
            Entry::Array { .. } => Value::Array(
                TapeArray(*self)
                    .elements()
                    .map(|node| node.to_tree())
                    .collect(),
            ),
            Entry::Object { .. } => Value::Object(
                TapeObject(*self)
                    .members()
                    .map(|(name, node)| (name.to_owned(), node.to_tree()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        matches!(self.entry(), Entry::Object { .. }).then_some(TapeObject(*self))
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        matches!(self.entry(), Entry::Array { .. }).then_some(TapeArray(*self))
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.entry() {
            Entry::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.entry() {
            Entry::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.entry(), Entry::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.entry() {
            Entry::Null => JsonType::Null,
            Entry::Bool(_) => JsonType::Boolean,
            Entry::Number(_) => JsonType::Number,
            Entry::Str { .. } => JsonType::String,
            Entry::Array { .. } => JsonType::Array,
            Entry::Object { .. } => JsonType::Object,
        }
    }

    fn string_length(&self) -> Option<u64> {
        self.str().map(|s| s.chars().count() as u64)
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let s = self.str()?;
        // A code point is one to four bytes: the byte length often decides without counting.
        let bytes = s.len() as u64;
        let fewest = bytes.div_ceil(4);
        if bytes < min || fewest > max {
            return Some(false);
        }
        if min <= fewest && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(s.chars().count() as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` compare every event's value: in place, without building a tree.
        match (self.entry(), expected) {
            (Entry::Null, _) => expected.is_null(),
            (Entry::Bool(b), _) => expected.as_bool() == Some(*b),
            (Entry::Str { .. }, _) => expected.as_str() == self.str(),
            (Entry::Number(n), Value::Number(e)) => cmp::equal_numbers(n, e),
            (Entry::Array { .. }, Value::Array(items)) => {
                let array = TapeArray(*self);
                array.len() == items.len()
                    && array.elements().zip(items).all(|(a, b)| a.equals_value(b))
            }
            (Entry::Object { .. }, Value::Object(members)) => {
                // Names on a tape are distinct, so equal lengths and every expected member
                // found equal is equality.
                let object = TapeObject(*self);
                object.len() == members.len()
                    && members.iter().all(|(name, value)| {
                        object
                            .find(name)
                            .is_some_and(|node| node.equals_value(value))
                    })
            }
            _ => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.to_tree())
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref(self.doc.tape) as usize,
            self.at,
        ))
    }
}

#[derive(Clone, Copy)]
pub struct TapeObject<'a>(TapeNode<'a>);

impl<'a> TapeObject<'a> {
    /// The value of member `key`: a scan in small objects, a binary search in large ones.
    fn find(&self, key: &str) -> Option<TapeNode<'a>> {
        let Entry::Object { len, index, .. } = *self.0.entry() else {
            return None;
        };
        let doc = self.0.doc;
        if index == NO_INDEX {
            return self
                .members()
                .find(|(name, _)| *name == key)
                .map(|(_, node)| node);
        }
        let names = &doc.tape.index[index as usize..(index + len) as usize];
        let found = names
            .binary_search_by(|&name| doc.name(name).cmp(key))
            .ok()?;
        Some(TapeNode {
            doc,
            at: names[found] + 1,
        })
    }
}

pub struct Members<'a> {
    doc: &'a Doc<'a>,
    next: u32,
    left: u32,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = self.next;
        let value = TapeNode {
            doc: self.doc,
            at: name + 1,
        };
        self.next = self.doc.after(name + 1);
        Some((self.doc.name(name), value))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        match *self.0.entry() {
            Entry::Object { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn get(&self, key: &Box<str>) -> Option<TapeNode<'a>> {
        self.find(key)
    }

    fn members(&self) -> Members<'a> {
        Members {
            doc: self.0.doc,
            next: self.0.at + 1,
            left: self.len() as u32,
        }
    }

    fn try_for_each_name_node<B>(
        &self,
        _buffer: &mut Tape,
        mut f: impl FnMut(TapeNode<'_>) -> std::ops::ControlFlow<B>,
    ) -> std::ops::ControlFlow<B> {
        // Names are string entries already.
        let mut members = self.members();
        while members.left > 0 {
            let name = members.next;
            members.next();
            let node = TapeNode {
                doc: self.0.doc,
                at: name,
            };
            if let std::ops::ControlFlow::Break(b) = f(node) {
                return std::ops::ControlFlow::Break(b);
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

#[derive(Clone, Copy)]
pub struct TapeArray<'a>(TapeNode<'a>);

pub struct Elements<'a> {
    doc: &'a Doc<'a>,
    next: u32,
    left: u32,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.next;
        self.next = self.doc.after(at);
        Some(TapeNode { doc: self.doc, at })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        match *self.0.entry() {
            Entry::Array { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            doc: self.0.doc,
            next: self.0.at + 1,
            left: self.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonschema::json::conformance;
    use serde_json::json;

    fn tree(text: &[u8]) -> Result<Value, String> {
        with_document(Some(text), |node| node.to_tree()).map_err(|e| e.to_string())
    }

    #[test]
    fn keeps_the_contract_the_validator_relies_on() {
        let text = serde_json::to_vec(&conformance::document()).unwrap();
        with_document(Some(&text), |node| {
            conformance::assert_conformance::<TapeJson>(&node)
        })
        .unwrap();
    }

    #[test]
    fn holds_what_serde_json_holds_and_fails_where_it_fails() {
        let texts: &[&[u8]] = &[
            b"null",
            br#"{"a":1,"a":2}"#,
            br#"{"b":{"x":1,"x":[1,2]},"a":"\u00e9\n\"\ud83d\ude00"}"#,
            br#"[-0, 0.0, 1e308, 1.5e-7, 18446744073709551615, -9223372036854775808, 123456789012345678901234567890]"#,
            br#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k3":"again"}"#,
            br#" { "s" : "plain" , "e" : "esc\\aped" } "#,
            br#"{"a":1"#,
            br#"{"a":1} x"#,
            br#"{"\ud800":1}"#,
            b"{\"a\":\"\xff\"}",
            b"[1,2,]",
            b"",
        ];
        for text in texts {
            let expected = serde_json::from_slice::<Value>(text).map_err(|e| e.to_string());
            assert_eq!(tree(text), expected, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_large_document_does_not_stay_on_the_thread() {
        let big = serde_json::to_vec(&vec![0; 100_000]).unwrap();
        with_document(Some(&big), |_| ()).unwrap();
        TAPE.with(|t| assert!(t.borrow().entries.capacity() <= KEEP_ENTRIES));
    }

    /// Random JSON text: names from a small set (so schemas' properties match and objects
    /// repeat names), escapes, numbers at the edges of each kind, objects over `SCANNED`.
    fn document(next: &mut impl FnMut() -> u64, depth: u32, out: &mut String) {
        const NAMES: &[&str] = &[
            "a", "b", "c", "n", "s", "\\u00e9", "é", "list", "k1", "k2", "k3", "k4", "k5",
        ];
        const STRINGS: &[&str] = &[
            "",
            "x",
            "abc",
            "héllo",
            "🦀🦀",
            "a\\\"b",
            "\\u00e9t\\u00e9",
            "\\ud83e\\udd80",
            "team",
            "free",
            "2026-12-06T10:00:00Z",
            "tab\\there",
        ];
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "1",
            "-1",
            "1.0",
            "1.5",
            "2",
            "10",
            "-7.25",
            "1e2",
            "1E-3",
            "3.0e0",
            "18446744073709551615",
            "-9223372036854775808",
            "9007199254740993",
            "123456789012345678901234567890",
            "0.1",
        ];
        let pick = |next: &mut dyn FnMut() -> u64, list: &[&'static str]| {
            list[(next() % list.len() as u64) as usize]
        };
        match next() % if depth == 0 { 4 } else { 7 } {
            0 => out.push_str(["null", "true", "false"][(next() % 3) as usize]),
            1 => out.push_str(pick(next, NUMBERS)),
            2 | 3 => {
                out.push('"');
                out.push_str(pick(next, STRINGS));
                out.push('"');
            }
            4 => {
                out.push('[');
                for i in 0..next() % 5 {
                    if i > 0 {
                        out.push(',');
                    }
                    document(next, depth - 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                let n = if next().is_multiple_of(4) {
                    9 + next() % 6
                } else {
                    next() % 5
                };
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(pick(next, NAMES));
                    out.push_str("\":");
                    document(next, depth - 1, out);
                }
                out.push('}');
            }
        }
    }

    /// Schemas using the keywords whose answers depend on the representation: lookups,
    /// member passes, names as nodes, string lengths, numbers, equality, uniqueness, `$ref`.
    fn schemas() -> Vec<Value> {
        vec![
            json!({"type": "object", "properties": {"a": {"type": "integer"}, "s": {"type": "string", "maxLength": 3}}, "required": ["a"]}),
            json!({"type": "object", "additionalProperties": false, "properties": {"a": {}, "b": {}, "n": {}}}),
            json!({"patternProperties": {"^k[0-9]$": {"type": "number", "minimum": 1, "exclusiveMaximum": 10}}}),
            json!({"propertyNames": {"maxLength": 1}}),
            json!({"propertyNames": {"enum": ["a", "b", "é"]}}),
            json!({"enum": [null, 1, "team", [1, 2], {"a": 1}]}),
            json!({"const": 1.0}),
            json!({"enum": [{"a": [1.0, {"b": "x"}]}, [[], {}], {"k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "a": 1, "b": 2, "c": 3, "n": 4}]}),
            json!({"items": {"const": {"a": null}}}),
            json!({"type": "array", "uniqueItems": true}),
            json!({"items": {"type": ["string", "integer"]}, "minItems": 1, "maxItems": 3}),
            json!({"prefixItems": [{"type": "null"}], "contains": {"const": "x"}}),
            json!({"multipleOf": 0.5}),
            json!({"type": "integer", "maximum": 18446744073709551615_u64}),
            json!({"minLength": 2, "maxLength": 4}),
            json!({"format": "date-time"}),
            json!({"oneOf": [{"type": "string"}, {"minProperties": 2}], "not": {"type": "null"}}),
            json!({"dependentRequired": {"a": ["b"]}, "minProperties": 1, "maxProperties": 10}),
            json!({"$defs": {"t": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/$defs/t"}}, {"type": "object", "additionalProperties": {"$ref": "#/$defs/t"}}]}}, "$ref": "#/$defs/t"}),
            json!({"if": {"required": ["s"]}, "then": {"properties": {"s": {"pattern": "^[a-z]+$"}}}, "else": {"required": ["c"]}}),
            json!({"properties": {"list": {"type": "array", "items": {"type": "object", "unevaluatedProperties": false, "properties": {"a": true}}}}}),
        ]
    }

    /// The tape and the tree agree on every document: the same value, the same verdict under
    /// every schema, and the error the tape reports is one the tree reports too.
    #[test]
    fn the_tape_and_the_tree_agree() {
        let all = schemas();
        let schemas: Vec<_> = all
            .iter()
            .map(|s| {
                let tape = compile(s);
                let tree = jsonschema::options().build(s).unwrap();
                (s, tape, tree)
            })
            .collect();
        let mut next = crate::event::tests::xorshift(0x5851_F42D_4C95_7F2D);
        let (mut valid, mut invalid, mut repeated) = (0, 0, 0);
        for _ in 0..4_000 {
            let mut text = String::new();
            document(&mut next, 4, &mut text);
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(tree(text.as_bytes()), Ok(value.clone()), "{text}");
            if text.contains("\"a\":") && text.matches("\"a\":").count() > 1 {
                repeated += 1;
            }
            for (schema, tape, serde) in &schemas {
                let expected = serde.is_valid(&value);
                with_document(Some(text.as_bytes()), |node| {
                    assert_eq!(
                        tape.is_valid(node),
                        expected,
                        "is_valid, schema {schema}, document {text}"
                    );
                    match tape.validate(node) {
                        Ok(()) => {
                            assert!(expected, "validate, schema {schema}, document {text}");
                            valid += 1;
                        }
                        Err(e) => {
                            assert!(!expected, "validate, schema {schema}, document {text}");
                            let path = e.instance_path().as_str().to_owned();
                            let paths: Vec<String> = serde
                                .iter_errors(&value)
                                .map(|e| e.instance_path().as_str().to_owned())
                                .collect();
                            assert!(
                                paths.contains(&path),
                                "tape error at {path}, tree errors at {paths:?}: schema {schema}, document {text}"
                            );
                            invalid += 1;
                        }
                    }
                })
                .unwrap();
            }
        }
        // The generator reaches both answers and the repeated-name path.
        assert!(
            valid > 5_000 && invalid > 5_000 && repeated > 50,
            "{valid} {invalid} {repeated}"
        );
    }

    fn compile(schema: &Value) -> jsonschema::Validator<TapeJson> {
        jsonschema::ValidationOptions::<std::sync::Arc<dyn jsonschema::Retrieve>, TapeJson>::default()
            .build(schema)
            .unwrap()
    }

    #[test]
    fn a_name_node_holds_its_name() {
        let mut buffer = Tape::default();
        for name in ["", "é", "a longer name"] {
            TapeJson::with_string_node(&mut buffer, name, |node| {
                assert_eq!(node.as_string().as_deref(), Some(name));
            });
        }
    }
}
