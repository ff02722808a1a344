//! Percent-encoding as cloud APIs want it: every byte but RFC 3986's unreserved ones
//! (`A–Z a–z 0–9 - . _ ~`) is encoded, with upper-case hex. S3's canonical request
//! requires exactly this; Google's JSON API and W&B's file URLs accept it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The same, keeping `/` as the separator of a path.
const PATH: &AsciiSet = &SEGMENT.remove(b'/');

/// One path segment (or a whole object name where the API wants its `/` encoded too).
pub fn encode_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A path whose `/` separate its segments (an S3 key in a request's path).
pub fn encode_path(text: &str) -> String {
    utf8_percent_encode(text, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_bytes_are_kept() {
        assert_eq!(encode_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_segment("a b/c+d"), "a%20b%2Fc%2Bd");
        assert_eq!(encode_path("a b/c+d"), "a%20b/c%2Bd");
        assert_eq!(encode_segment("été"), "%C3%A9t%C3%A9");
        assert_eq!(encode_segment("%"), "%25");
    }
}
