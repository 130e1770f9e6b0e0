//! Host name normalisation shared by every stage: the crawler keys breakers, rate limits
//! and cooldowns by a normalised host, so telemetry, config keys and store keys must agree.

use idna::AsciiDenyList;

/// Why a host name could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host name is empty")]
    Empty,
    #[error("host name {0:?} is not a valid IDNA domain")]
    Idna(String),
}

/// The longest DNS name, in bytes (RFC 1035: 253 characters without the final dot).
pub const MAX_HOST_BYTES: usize = 253;

/// Normalises a host the way the crawler does: trim, drop one trailing dot, then
/// UTS-46 mapping to lowercase ASCII with punycode labels (`München.Example.` becomes
/// `xn--mnchen-3ya.example`).
///
/// ASCII punctuation is not rejected (the deny list is empty): host names come from the
/// internet and a strange one must still be reported, escaped, rather than vanish.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    // No DNS name is longer (a longer value is a crawler bug or a hostile row, and a
    // million-byte one must not be copied into every row of the dataset).
    if trimmed.len() > MAX_HOST_BYTES {
        return Err(HostError::Idna(format!(
            "{}... ({} bytes, longer than any DNS name)",
            trimmed.chars().take(40).collect::<String>(),
            trimmed.len()
        )));
    }
    // Fast path: the crawler already writes normalised hosts, so most names are
    // lowercase ASCII without punycode labels and need no IDNA work.
    if trimmed
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !trimmed.contains("xn--")
        && !trimmed.contains("..")
    {
        return Ok(trimmed.to_owned());
    }
    idna::domain_to_ascii_cow(trimmed.as_bytes(), AsciiDenyList::EMPTY)
        .map(|c| c.into_owned())
        .map_err(|_| HostError::Idna(raw.to_owned()))
        .and_then(|h| {
            if h.is_empty() {
                Err(HostError::Empty)
            } else {
                Ok(h)
            }
        })
}

/// The Unicode form of a normalised host for people to read (`xn--mnchen-3ya.example`
/// reads `münchen.example`), or None when it is the same or does not decode. Shown
/// beside the punycode key, never instead of it: a look-alike Unicode name must not hide
/// which key the config holds.
pub fn unicode_form(host: &str) -> Option<String> {
    if !host.contains("xn--") {
        return None;
    }
    let (text, result) = idna::domain_to_unicode(host);
    (result.is_ok() && text != host).then_some(text)
}

/// A host for a report: `münchen.example (xn--mnchen-3ya.example)`, or the host itself.
pub fn display_host(host: &str) -> String {
    match unicode_form(host) {
        Some(u) => format!("{u} ({host})"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idn_hosts_read_in_unicode_beside_their_key() {
        assert_eq!(
            display_host("xn--mnchen-3ya.example"),
            "münchen.example (xn--mnchen-3ya.example)"
        );
        assert_eq!(display_host("api.crossref.org"), "api.crossref.org");
        assert_eq!(unicode_form("xn--zz.example"), None, "not valid punycode");
    }

    #[test]
    fn normalises_like_the_crawler() {
        assert_eq!(normalize_host("Example.COM").unwrap(), "example.com");
        assert_eq!(
            normalize_host(" api.crossref.org. ").unwrap(),
            "api.crossref.org"
        );
        assert_eq!(
            normalize_host("münchen.example").unwrap(),
            "xn--mnchen-3ya.example"
        );
        assert_eq!(
            normalize_host("xn--mnchen-3ya.example").unwrap(),
            "xn--mnchen-3ya.example"
        );
        assert_eq!(normalize_host("").unwrap_err(), HostError::Empty);
        assert_eq!(normalize_host(" . ").unwrap_err(), HostError::Empty);
    }

    #[test]
    fn keeps_hostile_names_as_text() {
        let h = normalize_host("</script><img src=x onerror=alert(1)>.example").unwrap();
        assert!(h.contains("<img"), "{h}");
    }
}
