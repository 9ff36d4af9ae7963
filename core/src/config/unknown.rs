//! Keys the server does not know. KES ignores them, and so do we, but a
//! misspelt key (`keystroe:`, `unsued:`) silently means "use the default",
//! so each one is warned about with its line.

use super::env::KeyPath;

/// What may appear under a key.
enum Shape {
    /// A value; nothing below it is checked.
    Any,
    /// A mapping with these keys.
    Map(&'static [(&'static str, Shape)]),
    /// A mapping with names of the user's choice (policies, API paths),
    /// each shaped like this.
    Named(&'static Shape),
}

use Shape::{Any, Map, Named};

/// A `limits:` section (policy, admin, default).
const LIMITS: Shape = Map(&[("rate", Any), ("burst", Any), ("concurrent", Any)]);

/// Both schema eras and our `compat` section (config.md §2.1, §3.1, §4).
/// Store sections are checked by name only: their keys differ by version.
const ROOT: Shape = Map(&[
    ("version", Any),
    ("address", Any),
    ("root", Any),
    ("admin", Map(&[("identity", Any), ("limits", LIMITS)])),
    (
        "tls",
        Map(&[
            ("key", Any),
            ("cert", Any),
            ("password", Any),
            ("auth", Any),
            ("ca", Any),
            ("proxy", Map(&[("identities", Any), ("header", Map(&[("cert", Any)]))])),
            ("handshake_rate", Any),
        ]),
    ),
    ("api", Named(&Map(&[("skip_auth", Any), ("timeout", Any)]))),
    (
        "policy",
        Named(&Map(&[
            ("allow", Any),
            ("deny", Any),
            ("paths", Any),
            ("identities", Any),
            ("limits", LIMITS),
        ])),
    ),
    (
        "cache",
        Map(&[
            ("expiry", Map(&[("any", Any), ("unused", Any), ("offline", Any)])),
            ("stale_wait", Any),
        ]),
    ),
    ("log", Map(&[("error", Any), ("audit", Any)])),
    // A list of `- name:` entries, or the v0.13.5 keystore mapping.
    ("keys", Any),
    (
        "keystore",
        Map(&[
            ("fs", Map(&[("path", Any)])),
            ("vault", Any),
            ("fortanix", Any),
            ("aws", Any),
            ("gcp", Any),
            ("azure", Any),
            ("gemalto", Any),
            ("generic", Any),
            ("entrust", Any),
            ("kes", Any),
        ]),
    ),
    ("compat", Map(&[("api", Any), ("ciphertext", Any)])),
    // A list of `- key: ... every: ...` entries (validated as parsed).
    ("rotation", Any),
    ("limits", LIMITS),
    (
        "hsm",
        Map(&[("pkcs11", Map(&[("module", Any), ("token", Any), ("pin", Any), ("key", Any)]))]),
    ),
]);

/// One warning per unknown key, naming its line and its full path.
pub(super) fn warnings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = KeyPath::default();
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = path.entry(line) else { continue };
        if entry.key.is_none() {
            continue;
        }
        let keys: Vec<&str> = path.path().collect();
        if !known(&ROOT, &keys) {
            out.push(format!("line {}: unknown key '{}' is ignored", i + 1, keys.join(".")));
        }
    }
    out
}

/// Whether the path is allowed by the shape. A path below an unknown key is
/// counted as known, so only the misspelt key itself is reported.
fn known(shape: &Shape, keys: &[&str]) -> bool {
    let Some((first, rest)) = keys.split_first() else { return true };
    match shape {
        Any => true,
        Named(inner) => known(inner, rest),
        Map(fields) => match fields.iter().find(|(k, _)| k == first) {
            Some((_, inner)) => known(inner, rest),
            None => !rest.is_empty(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_keys_are_named_with_their_line() {
        let text = "address: 0.0.0.0:7373\nkeystroe:\n  fs:\n    path: ./keys\ncache:\n  expiry:\n    unsued: 30s\n    any: 5m\npolicy:\n  my-app:\n    allow: []\n    identitees: []\n";
        assert_eq!(
            warnings(text),
            vec![
                "line 2: unknown key 'keystroe' is ignored",
                "line 7: unknown key 'cache.expiry.unsued' is ignored",
                "line 12: unknown key 'policy.my-app.identitees' is ignored",
            ]
        );
    }

    #[test]
    fn known_keys_of_both_eras_are_quiet() {
        let text = "version: v1\nroot: x\nadmin:\n  identity: x\ntls:\n  proxy:\n    header:\n      cert: X\napi:\n  /v1/status:\n    skip_auth: true\nkeys:\n  - name: a\nkeystore:\n  vault:\n    endpoint: x\n    approle:\n      id: y\n";
        assert!(warnings(text).is_empty(), "{:?}", warnings(text));
    }
}
