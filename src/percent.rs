//! Percent-encoding of everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`),
//! the set both URIs Sluice builds (event `source`) and AWS SigV4 want.

const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode_unreserved(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}
