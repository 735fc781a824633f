//! Strict email address parsing: one `@`, ASCII dot-atom local part, DNS domain; canonical form is lower-case.

use std::fmt;

/// Why an address or domain was refused. Messages are safe to show to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("enter an email address")]
    Empty,
    #[error("the address is too long")]
    TooLong,
    #[error("use plain ASCII characters only")]
    NotAscii,
    #[error("an address has exactly one @")]
    At,
    #[error("the part before @ is not valid")]
    Local,
    #[error("the domain is not valid")]
    Domain,
}

/// A syntactically valid address in canonical (lower-case) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    canonical: String,
    at: usize,
}

impl Address {
    /// The canonical form: what rate limits, sessions and the mail recipient use.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
    /// The part after `@`.
    pub fn domain(&self) -> &str {
        &self.canonical[self.at + 1..]
    }
    /// The part before `@`.
    pub fn local(&self) -> &str {
        &self.canonical[..self.at]
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;

/// Characters allowed in the local part. A conservative subset of RFC 5322 `atext`:
/// no quotes, comments, `%` or `!` routing, `|` or `/` (sendmail pipe tricks), no spaces.
fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'\'' | b'=')
}

/// Parses user input: surrounding white space is ignored, everything else must be exact.
pub fn parse_address(input: &str) -> Result<Address, AddressError> {
    let s = input.trim_matches([' ', '\t']);
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if !s.is_ascii() {
        return Err(AddressError::NotAscii);
    }
    if s.len() > MAX_ADDRESS {
        return Err(AddressError::TooLong);
    }
    let mut parts = s.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        _ => return Err(AddressError::At),
    };
    if local.is_empty()
        || local.len() > MAX_LOCAL
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.bytes().all(local_char)
    {
        return Err(AddressError::Local);
    }
    let domain = parse_domain(domain).map_err(|_| AddressError::Domain)?;
    let canonical = format!("{}@{}", local.to_ascii_lowercase(), domain);
    Ok(Address {
        at: local.len(),
        canonical,
    })
}

/// Parses a DNS host name (no IP literals, no trailing dot, at least two labels) into lower case.
pub fn parse_domain(input: &str) -> Result<String, AddressError> {
    let d = input;
    if d.is_empty() || d.len() > 253 {
        return Err(AddressError::Domain);
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(AddressError::Domain);
    }
    for l in &labels {
        if l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(AddressError::Domain);
        }
    }
    // A numeric top label means an IP address in disguise (1.2.3.4, 0x7f.1).
    if labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(AddressError::Domain);
    }
    Ok(d.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_canonicalises() {
        let a = parse_address("  Alice.Smith+tools@Example.COM ").unwrap();
        assert_eq!(a.canonical(), "alice.smith+tools@example.com");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.local(), "alice.smith+tools");
        assert!(parse_address("o'brien@sub.example.co.uk").is_ok());
        assert!(parse_address("x@xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn rejects_tricks() {
        let bad = [
            "",
            "plain",
            "a@@example.com",
            "a@b@example.com",
            "\"quoted\"@example.com",
            "a(comment)@example.com",
            "Alice <a@example.com>",
            "a@example.com\r\nBcc: x@evil.com",
            "a@example.com,b@evil.com",
            "a@[127.0.0.1]",
            "a@127.0.0.1",
            "a@localhost",
            "a@example.com.",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a%b@example.com",
            "a!b@example.com",
            "|cmd@example.com",
            "a@-example.com",
            "a@exa_mple.com",
            "ä@example.com",
            "a@exämple.com",
            "a b@example.com",
            "a@example.com\0",
        ];
        for b in bad {
            assert!(parse_address(b).is_err(), "accepted {b:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(parse_address(&long_local), Err(AddressError::Local));
        let long = format!("a@{}.com", "b".repeat(260));
        assert_eq!(parse_address(&long), Err(AddressError::TooLong));
    }
}
