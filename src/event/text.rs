//! [`Text`]: a string that is usually a slice of the request body, so that an attribute is
//! read once and handed to record headers without being copied or allocated again.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// UTF-8 text held in [`Bytes`]: a slice of the body it was read from, a static string, or
/// its own copy when it had to be unescaped. Cloning it, or taking it as `Bytes` for a record
/// header, copies nothing.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// `part`, which lies inside `whole`, without copying it.
    ///
    /// # Panics
    /// When `part` is not within `whole`.
    pub fn slice_of(whole: &Bytes, part: &str) -> Text {
        Text(whole.slice_ref(part.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Every constructor starts from a `str`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as bytes, shared.
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_the_body() {
        let body = Bytes::from_static(b"{\"id\":\"abc\"}");
        let text = std::str::from_utf8(&body).unwrap();
        let id = Text::slice_of(&body, &text[7..10]);
        assert_eq!(id, "abc");
        assert_eq!(id.bytes().as_ptr(), body[7..].as_ptr());
        assert_eq!(Text::from("x".to_string()).as_str(), "x");
        assert_eq!(format!("{:?}", Text::from_static("q\"")), "\"q\\\"\"");
    }
}
