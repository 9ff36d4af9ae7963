//! Names that reach a key store: validated once, at the edge, and then
//! carried as types so no handler can forget to check.
//!
//! The alphabet is the seed era's (`0-9 A-Z a-z - _`, 1 to 80 bytes), which is
//! a superset of v0.24's, so keys an older server created stay usable. It has
//! no `/`, `\` or `.`, so a name can never escape the fs store's directory.

use std::fmt;

/// Longest name KES accepts, in bytes.
pub const MAX_NAME_LEN: usize = 80;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A validated key name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Validates `s` as a key name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Key(s.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store entry that holds a key's new versions while they are being
    /// written (see `server::rotation`). Its name is longer than any key
    /// name may be, so no client can create it, and uses only characters
    /// every store accepts (GCP and Azure allow no `.`): the key name, `-`,
    /// its length in two digits, then `0`s up to `MAX_NAME_LEN + 1`. The
    /// length digits make it unambiguous (`a` and `a-` differ).
    pub fn staging(&self) -> KeyName {
        let mut s = format!("{}-{:02}", self.0, self.0.len());
        while s.len() <= MAX_NAME_LEN {
            s.push('0');
        }
        KeyName(s)
    }
}

impl KeyName {
    /// The store entry that claims the breaking of one stale staged copy
    /// (see `server::rotation`): the key name, `-`, its length in two
    /// digits, `x`, the first 8 bytes of the copy's SHA-256 in hex, padded
    /// with `0`s past `MAX_NAME_LEN` like a staging name (so no client can
    /// create it) but never equal to one (the `x`).
    pub fn breaker(&self, staged: &[u8]) -> KeyName {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(staged);
        let mut s = format!("{}-{:02}x", self.0, self.0.len());
        for b in &digest[..8] {
            s.push_str(&format!("{b:02x}"));
        }
        while s.len() <= MAX_NAME_LEN {
            s.push('0');
        }
        KeyName(s)
    }

    /// The key whose staging name `s` is (see [`KeyName::staging`]), if it
    /// is one. Listings use it: while a change is half done (or its writer
    /// died) the staged copy is all the store holds of a key.
    pub fn of_staging(s: &str) -> Option<KeyName> {
        if s.len() <= MAX_NAME_LEN {
            return None;
        }
        (1..=MAX_NAME_LEN.min(s.len() - 3)).find_map(|len| {
            let name = KeyName::parse(s.get(..len)?).ok()?;
            (name.staging().as_str() == s).then_some(name)
        })
    }
}

/// True if `s` is a valid key, policy or identity name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(is_name_byte)
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({})", self.0)
    }
}

impl std::borrow::Borrow<str> for KeyName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for KeyName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated listing pattern (`/v1/key/list/<pattern>` and friends).
///
/// Both client generations must work: the seed-era client sends globs
/// (`*`, `my-*`), kms-go sends bare prefixes (`my-`, or nothing for "all").
/// A pattern containing `*` is therefore a glob; anything else is a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListPattern {
    /// Names starting with this text (empty: all names).
    Prefix(String),
    /// Names matching this glob (only `*` can occur).
    Glob(String),
}

impl ListPattern {
    /// Validates a listing pattern.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = s.len() <= MAX_NAME_LEN && s.bytes().all(|b| is_name_byte(b) || b == b'*');
        if !ok {
            return Err(NameError::Pattern(s.to_owned()));
        }
        if s == "*" {
            Ok(Self::Prefix(String::new()))
        } else if s.contains('*') {
            Ok(Self::Glob(s.to_owned()))
        } else {
            Ok(Self::Prefix(s.to_owned()))
        }
    }

    /// Whether `name` is selected by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Prefix(p) => name.starts_with(p.as_str()),
            Self::Glob(g) => crate::policy::glob_match(g, name),
        }
    }
}

/// A name or pattern that failed validation; the text is what KES v0.24 says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// An invalid key name.
    Key(String),
    /// An invalid policy name.
    Policy(String),
    /// An invalid identity argument.
    Identity(String),
    /// An invalid listing pattern.
    Pattern(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(x) => {
                write!(f, "key name '{x}' is empty, too long or contains invalid characters")
            }
            Self::Policy(x) => {
                write!(f, "policy name '{x}' is empty, too long or contains invalid characters")
            }
            Self::Identity(x) => {
                write!(f, "identity '{x}' is empty, too long or contains invalid characters")
            }
            Self::Pattern(x) => {
                write!(f, "listing pattern '{x}' is empty, too long or is invalid")
            }
        }
    }
}

impl std::error::Error for NameError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_a_store_cannot_hold() {
        for bad in ["", "../x", "a/b", "..", ".", "a.b", "a\\b", "a b", "ä", &"k".repeat(81)] {
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "my-key", "Gamma_3", "_", "-x", &"k".repeat(80)] {
            assert_eq!(KeyName::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn staging_names_tell_similar_keys_apart() {
        let s = |n: &str| KeyName::parse(n).unwrap().staging().as_str().to_owned();
        assert_ne!(s("a"), s("a-"));
        assert_ne!(s("a"), s("a-01"));
        assert!(s("a").starts_with("a-01000"));
        assert_eq!(s(&"k".repeat(80)), format!("{}-80", "k".repeat(80)));
    }

    #[test]
    fn list_patterns() {
        assert_eq!(ListPattern::parse("").unwrap(), ListPattern::Prefix(String::new()));
        assert_eq!(ListPattern::parse("*").unwrap(), ListPattern::Prefix(String::new()));
        assert!(ListPattern::parse("my-").unwrap().matches("my-key"));
        assert!(ListPattern::parse("my-*").unwrap().matches("my-key"));
        assert!(!ListPattern::parse("*-x").unwrap().matches("my-key"));
        assert!(ListPattern::parse("a/b").is_err());
        assert!(ListPattern::parse("a?").is_err());
    }

    proptest! {
        #[test]
        fn parse_display_round_trip(s in "[0-9A-Za-z_-]{1,80}") {
            prop_assert_eq!(KeyName::parse(&s).unwrap().to_string(), s);
        }

        #[test]
        fn staging_names_lead_back_to_their_key(a in "[0-9A-Za-z_-]{1,80}") {
            let name = KeyName::parse(&a).unwrap();
            prop_assert_eq!(KeyName::of_staging(name.staging().as_str()), Some(name.clone()));
            prop_assert_eq!(KeyName::of_staging(&a), None);
            let breaker = name.breaker(b"staged");
            prop_assert_eq!(KeyName::of_staging(breaker.as_str()), None);
            prop_assert!(!valid_name(breaker.as_str()) && breaker.as_str().len() <= 100);
        }

        /// No client name is a staging name, staging names never collide,
        /// and they use only characters every store accepts.
        #[test]
        fn staging_names_are_reserved_and_distinct(a in "[0-9A-Za-z_-]{1,80}", b in "[0-9A-Za-z_-]{1,80}") {
            let (sa, sb) = (KeyName::parse(&a).unwrap().staging(), KeyName::parse(&b).unwrap().staging());
            prop_assert!(!valid_name(sa.as_str()));
            prop_assert_eq!(sa.as_str().len(), (a.len() + 3).max(MAX_NAME_LEN + 1));
            prop_assert!(sa.as_str().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            prop_assert_eq!(a == b, sa == sb);
        }

        #[test]
        fn accepted_names_are_path_safe(s in "\\PC{0,100}") {
            if let Ok(n) = KeyName::parse(&s) {
                prop_assert!(!n.as_str().contains(['/', '\\', '.']));
                prop_assert!(!n.as_str().is_empty() && n.as_str().len() <= 80);
            }
        }
    }
}
