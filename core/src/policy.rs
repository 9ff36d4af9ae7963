//! Who may do what: glob allow/deny policies bound to identities.
//!
//! Evaluation follows the seed: deny patterns first, then allow patterns,
//! otherwise deny. Patterns use Go `path.Match` semantics (`*`, `?` and
//! `[...]` never cross a `/`), because that is what the brief documents and
//! what seed-era policy files were written against.

use std::collections::BTreeMap;

use crate::identity::Identity;
use crate::time::UnixTime;

/// A compiled policy pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// Malformed patterns (unterminated `[`, trailing `\`) never match, as in Go.
    well_formed: bool,
}

impl Pattern {
    /// Compiles a pattern; malformed ones are kept (for display) but inert.
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), well_formed: glob_well_formed(text) }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern can match anything (Go rejects the others).
    pub fn is_well_formed(&self) -> bool {
        self.well_formed
    }

    /// Whether the request path matches.
    pub fn matches(&self, path: &str) -> bool {
        self.well_formed && glob_match(&self.text, path)
    }

    /// Whether this pattern grants something different under KES v0.24's
    /// prefix matcher (only a trailing `*` is special there, and it may cross
    /// `/`). Operators migrating policy files between servers need to know.
    pub fn differs_under_prefix_matching(&self) -> bool {
        let body = self.text.strip_suffix('*');
        let inner = body.unwrap_or(&self.text);
        if inner.contains(['*', '?', '[', '\\']) {
            return true;
        }
        // A trailing `*` inside a resource segment (`/v1/key/create/app-*`)
        // means the same in both, since resources never contain `/`. Earlier
        // (`/v1/*`, `/v1/log/*`) the prefix form crosses into other routes.
        body.is_some() && inner.matches('/').count() < 4
    }
}

/// Go `path.Match`: anchored at both ends; `*` is any run of non-`/`, `?` one
/// non-`/` character, `[...]` a class (`^` negates, `a-z` ranges), `\`
/// escapes. Returns false for malformed patterns.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    // Request paths and patterns are ASCII in practice: match bytes without
    // allocating. Anything else takes the (equivalent) char path.
    if pattern.is_ascii() && name.is_ascii() {
        glob_match_units(pattern.as_bytes(), name.as_bytes(), b'/')
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let s: Vec<char> = name.chars().collect();
        glob_match_units(&p, &s, '/')
    }
}

/// A unit of text the matcher walks: a byte (ASCII fast path) or a char.
trait Unit: Copy + PartialOrd + PartialEq {
    fn is(self, c: char) -> bool;
}

impl Unit for u8 {
    fn is(self, c: char) -> bool {
        u32::from(self) == c as u32
    }
}

impl Unit for char {
    fn is(self, c: char) -> bool {
        self == c
    }
}

fn glob_match_units<T: Unit>(p: &[T], s: &[T], sep: T) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(&pc) = p.get(pi) {
            if pc.is('*') {
                star = Some((pi + 1, si));
                pi += 1;
                continue;
            }
            if let Some(&sc) = s.get(si) {
                let step = if pc.is('?') {
                    (sc != sep).then_some(1)
                } else if pc.is('[') {
                    match match_class(&p[pi..], sc) {
                        Some((true, used)) => Some(used),
                        Some((false, _)) => None,
                        None => return false,
                    }
                } else if pc.is('\\') {
                    match p.get(pi + 1) {
                        Some(&lit) => (lit == sc).then_some(2),
                        None => return false,
                    }
                } else {
                    (pc == sc).then_some(1)
                };
                if let Some(used) = step {
                    pi += used;
                    si += 1;
                    continue;
                }
            }
        } else if si == s.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more (non-`/`) character.
        match star {
            Some((sp, ss)) if s.get(ss).is_some_and(|&c| c != sep) => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// Matches a `[...]` class at the start of `p` against `c`. Returns whether it
/// matched and how many pattern chars it spans, or None if malformed.
fn match_class<T: Unit>(p: &[T], c: T) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = p.get(i).is_some_and(|u| u.is('^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch.is(']') && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, n) = class_char(p, i)?;
        i += n;
        let hi = if p.get(i).is_some_and(|u| u.is('-')) {
            let (hi, n) = class_char(p, i + 1)?;
            i += 1 + n;
            if hi < lo {
                return None;
            }
            hi
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negated, i))
}

fn class_char<T: Unit>(p: &[T], i: usize) -> Option<(T, usize)> {
    let c = *p.get(i)?;
    if c.is('-') || c.is(']') {
        None
    } else if c.is('\\') {
        Some((*p.get(i + 1)?, 2))
    } else {
        Some((c, 1))
    }
}

fn glob_well_formed(pattern: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return false;
                }
                i += 2;
            }
            '[' => match match_class(&p[i..], '\0') {
                Some((_, used)) => i += used,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// The outcome of a policy check. Deny always wins over allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allow,
    /// The request is refused with 403.
    Deny,
}

/// A named set of allow and deny patterns.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Patterns that grant access.
    pub allow: Vec<Pattern>,
    /// Patterns that refuse access, whatever `allow` says.
    pub deny: Vec<Pattern>,
    /// When the policy was defined (server start for config policies).
    pub created_at: UnixTime,
    /// Who defined it (the admin for config policies), if known.
    pub created_by: Option<Identity>,
}

impl Policy {
    /// Evaluates the request path: deny first, then allow, else deny.
    pub fn verify(&self, path: &str) -> Verdict {
        if self.deny.iter().any(|p| p.matches(path)) {
            return Verdict::Deny;
        }
        if self.allow.iter().any(|p| p.matches(path)) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// All policies and the identity → policy bindings (one policy per identity).
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: BTreeMap<String, Policy>,
    bindings: BTreeMap<Identity, Binding>,
}

/// The policy an identity is bound to, and when and by whom.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The policy's name (which may no longer exist, seed-era semantics).
    pub policy: String,
    /// When the binding was made.
    pub created_at: UnixTime,
    /// Who made it.
    pub created_by: Option<Identity>,
}

/// Why a request was not authorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No policy, or the policy denies the path (403).
    NotAllowed,
    /// The identity is bound to a policy that was deleted (404).
    PolicyMissing,
}

impl PolicySet {
    /// Adds or replaces a policy; existing bindings to its name stay.
    pub fn set_policy(&mut self, name: &str, policy: Policy) {
        self.policies.insert(name.to_owned(), policy);
    }

    /// Removes a policy; identities bound to it keep their binding.
    pub fn remove_policy(&mut self, name: &str) {
        self.policies.remove(name);
    }

    /// Binds (or moves) an identity to a policy.
    pub fn bind(&mut self, identity: Identity, binding: Binding) {
        self.bindings.insert(identity, binding);
    }

    /// Removes an identity's binding.
    pub fn forget(&mut self, identity: &Identity) {
        self.bindings.remove(identity);
    }

    /// A policy by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// The binding of an identity.
    pub fn binding(&self, identity: &Identity) -> Option<&Binding> {
        self.bindings.get(identity)
    }

    /// All policies in name order.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.policies.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// All bindings in identity order.
    pub fn bindings(&self) -> impl Iterator<Item = (&Identity, &Binding)> {
        self.bindings.iter()
    }

    /// Authorises a non-admin identity for a request path.
    pub fn authorize(&self, identity: &Identity, path: &str) -> Result<(), Refusal> {
        let binding = self.bindings.get(identity).ok_or(Refusal::NotAllowed)?;
        let policy = self.policies.get(&binding.policy).ok_or(Refusal::PolicyMissing)?;
        match policy.verify(path) {
            Verdict::Allow => Ok(()),
            Verdict::Deny => Err(Refusal::NotAllowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|p| Pattern::new(p)).collect(),
            deny: deny.iter().map(|p| Pattern::new(p)).collect(),
            created_at: UnixTime::default(),
            created_by: None,
        }
    }

    /// The seed's first policy table, row by row.
    #[test]
    fn seed_table_one() {
        let p = policy(
            &["/v1/key/create/my-key", "/v1/key/generate/my-key", "/v1/key/decrypt/my-key"],
            &["/v1/key/*/my-key-internal"],
        );
        let rows = [
            ("/v1/key/create/my-key", Verdict::Allow),
            ("/v1/key/generate/my-key", Verdict::Allow),
            ("/v1/key/create/my-key2", Verdict::Deny),
            ("/v1/key/delete/my-key", Verdict::Deny),
            ("/v1/policy/write/my-policy", Verdict::Deny),
            ("/v0/key/create/my-key", Verdict::Deny),
        ];
        for (path, want) in rows {
            assert_eq!(p.verify(path), want, "{path}");
        }
    }

    /// The seed's second policy table, row by row.
    #[test]
    fn seed_table_two() {
        let p = policy(
            &[
                "/v1/key/create/my-key*",
                "/v1/key/generate/my-key*",
                "/v1/key/decrypt/my-key*",
                "/v1/key/delete/my-key",
            ],
            &["/v1/key/*/my-key-internal"],
        );
        let rows = [
            ("/v1/key/create/my-key", Verdict::Allow),
            ("/v1/key/generate/my-key", Verdict::Allow),
            ("/v1/key/create/my-key2", Verdict::Allow),
            ("/v1/key/delete/my-key", Verdict::Allow),
            ("/v1/key/delete/my-key2", Verdict::Deny),
            ("/v1/key/decrypt/my-key-internal", Verdict::Deny),
        ];
        for (path, want) in rows {
            assert_eq!(p.verify(path), want, "{path}");
        }
    }

    /// policy-identity.md §4.6, the v0.19.0 column (our semantics).
    #[test]
    fn worked_examples() {
        let p = policy(
            &[
                "/v1/key/create/app-*",
                "/v1/key/generate/app-*",
                "/v1/key/decrypt/app-*",
                "/v1/key/*/shared",
                "/v1/key/list/*",
                "/v1/status",
                "/v1/log/*",
            ],
            &["/v1/key/*/app-secret*"],
        );
        let rows = [
            ("/v1/key/create/app-1", Verdict::Allow),
            ("/v1/key/create/app-secret", Verdict::Deny),
            ("/v1/key/encrypt/shared", Verdict::Allow),
            ("/v1/key/create/APP-1", Verdict::Deny),
            ("/v1/key/delete/app-1", Verdict::Deny),
            ("/v1/status", Verdict::Allow),
            ("/v1/key/list/*", Verdict::Allow),
            ("/v1/key/list/", Verdict::Allow),
            ("/v1/log/audit", Verdict::Allow),
            ("/v1/key/generate/app-2/x", Verdict::Deny),
        ];
        for (path, want) in rows {
            assert_eq!(p.verify(path), want, "{path}");
        }
        let single = [
            ("/v1/key/create/app-?", "/v1/key/create/app-x", true),
            ("/v1/key/create/[ab]*", "/v1/key/create/a1", true),
            ("/v1/*", "/v1/key/create/k", false),
            ("/v1/*", "/v1/status", true),
            ("/v1/key/*", "/v1/key/create/k", false),
            ("/v1/key/*/*", "/v1/key/create/k", true),
            ("/v1/key/create/k", "/v1/key/create/k", true),
            ("/v1/key/create/k", "/v1/key/create/k2", false),
            ("", "/v1/status", false),
            ("/v1/key/create/[", "/v1/key/create/[", false),
        ];
        for (pat, path, want) in single {
            assert_eq!(Pattern::new(pat).matches(path), want, "{pat} vs {path}");
        }
    }

    #[test]
    fn prefix_difference_warnings() {
        assert!(!Pattern::new("/v1/key/create/app-*").differs_under_prefix_matching());
        assert!(!Pattern::new("/v1/status").differs_under_prefix_matching());
        assert!(Pattern::new("/v1/key/*/shared").differs_under_prefix_matching());
        assert!(Pattern::new("/v1/*").differs_under_prefix_matching());
        assert!(Pattern::new("/v1/log/*").differs_under_prefix_matching());
        assert!(Pattern::new("/v1/key/create/app-?").differs_under_prefix_matching());
    }

    #[test]
    fn bindings_and_missing_policies() {
        let mut set = PolicySet::default();
        let id = Identity::from_spki_der(b"x");
        assert_eq!(set.authorize(&id, "/v1/status"), Err(Refusal::NotAllowed));
        set.set_policy("p", policy(&["/v1/status"], &[]));
        set.bind(
            id,
            Binding { policy: "p".into(), created_at: UnixTime::default(), created_by: None },
        );
        assert_eq!(set.authorize(&id, "/v1/status"), Ok(()));
        set.remove_policy("p");
        assert_eq!(set.authorize(&id, "/v1/status"), Err(Refusal::PolicyMissing));
    }

    /// Straightforward recursive reference for Go's `path.Match` on the
    /// subset of patterns the generator makes (no classes, no escapes).
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| reference(rest, &s[i..])),
            Some(('?', rest)) => {
                matches!(s.split_first(), Some((c, tail)) if *c != '/' && reference(rest, tail))
            }
            Some((c, rest)) => {
                matches!(s.split_first(), Some((d, tail)) if d == c && reference(rest, tail))
            }
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_reference(p in "[ab/*?]{0,8}", s in "[ab/]{0,8}") {
            let pc: Vec<char> = p.chars().collect();
            let sc: Vec<char> = s.chars().collect();
            prop_assert_eq!(glob_match(&p, &s), reference(&pc, &sc));
        }

        #[test]
        fn non_ascii_takes_the_char_path(p in "[aé/*?]{0,8}", s in "[aé/]{0,8}") {
            let pc: Vec<char> = p.chars().collect();
            let sc: Vec<char> = s.chars().collect();
            prop_assert_eq!(glob_match(&p, &s), reference(&pc, &sc));
        }

        #[test]
        fn deny_always_wins(path in "/v1/[a-z/]{0,12}", pat in "/v1/[a-z/*]{0,10}") {
            let p = policy(&[&pat, "*", "/*", "/v1/*", "/v1/*/*"], &[&pat]);
            if Pattern::new(&pat).matches(&path) {
                prop_assert_eq!(p.verify(&path), Verdict::Deny);
            }
        }

        #[test]
        fn never_panics(p in "\\PC{0,12}", s in "\\PC{0,12}") {
            let _ = Pattern::new(&p).matches(&s);
        }
    }
}
