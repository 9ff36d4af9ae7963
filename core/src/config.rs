//! The KES YAML config file, both eras (config.md), parsed without touching
//! the environment: `${VAR}` references resolve through a lookup function the
//! adapter passes in.
//!
//! Errors carry the line they refer to, so `kes server` can say
//! "config.yml line 12: ..." instead of leaving the operator to guess.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::crypto::CiphertextFormat;
use crate::identity::Identity;
use crate::name::valid_name;
use crate::time::parse_go_duration;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `address`, if set in the file.
    pub address: Option<String>,
    /// The admin identity as configured.
    pub admin: AdminSetting,
    /// The `tls` section.
    pub tls: TlsConfig,
    /// `api.<path>` overrides, keyed by route path.
    pub api: BTreeMap<String, ApiOverride>,
    /// Policies by name.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Key cache expiry.
    pub cache: CacheConfig,
    /// Which logs go to stdout/stderr.
    pub log: LogConfig,
    /// Keys to create before serving.
    pub keys: Vec<String>,
    /// Where keys are stored.
    pub keystore: KeystoreConfig,
    /// Compatibility switches.
    pub compat: Compat,
    /// Things the operator should know that are not errors.
    pub warnings: Vec<String>,
}

/// The admin identity setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminSetting {
    /// Not configured at all (an error unless a flag supplies it).
    Unset,
    /// A value that can never match a certificate: admin is off.
    Disabled(String),
    /// The admin identity.
    Identity(Identity),
}

impl AdminSetting {
    /// Interprets a configured value: 64 lowercase hex chars is an identity,
    /// anything else disables admin; empty is unset.
    pub fn from_text(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() {
            Self::Unset
        } else {
            Identity::parse(s).map_or_else(|| Self::Disabled(s.to_owned()), Self::Identity)
        }
    }

    /// The identity, if admin is enabled.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Self::Identity(i) => Some(*i),
            Self::Unset | Self::Disabled(_) => None,
        }
    }
}

/// The `tls` section.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Private key file.
    pub key: Option<String>,
    /// Certificate file.
    pub cert: Option<String>,
    /// Password of a legacy-encrypted PEM key.
    pub password: Option<String>,
    /// Verify client certificates (`tls.auth` / `--auth`); None if unset.
    pub auth: Option<bool>,
    /// CA file or directory for client verification.
    pub ca: Option<String>,
    /// Identities of TLS-terminating proxies.
    pub proxy_identities: Vec<Identity>,
    /// Header carrying the forwarded client certificate.
    pub proxy_header: String,
}

/// The header KES's sample config names for forwarded certificates.
pub const DEFAULT_PROXY_HEADER: &str = "X-Tls-Client-Cert";

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            key: None,
            cert: None,
            password: None,
            auth: None,
            ca: None,
            proxy_identities: Vec::new(),
            proxy_header: DEFAULT_PROXY_HEADER.to_owned(),
        }
    }
}

/// An `api.<path>` entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiOverride {
    /// Serve the route without authentication.
    pub skip_auth: bool,
    /// Replace the route's timeout (if non-zero).
    pub timeout: Option<Duration>,
}

/// One policy as configured.
#[derive(Clone, Debug, Default)]
pub struct PolicyConfig {
    /// Allow patterns.
    pub allow: Vec<String>,
    /// Deny patterns.
    pub deny: Vec<String>,
    /// Bound identities.
    pub identities: Vec<Identity>,
}

/// Key cache expiry settings (keystore.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Empty the cache this often.
    pub any: Duration,
    /// Evict keys unused for this long.
    pub unused: Duration,
    /// Keep serving cached keys this long while the store is unreachable.
    pub offline: Duration,
}

impl Default for CacheConfig {
    /// The documented intent (any 5m, unused 30s), not v0.24's defaulting bug.
    fn default() -> Self {
        Self {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

/// Which events are logged to the process's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Error events to stderr.
    pub error: bool,
    /// Audit events to stdout.
    pub audit: bool,
}

/// The selected key store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoreConfig {
    /// Process memory; lost on exit.
    Memory,
    /// One file per key in a directory.
    Fs {
        /// The directory.
        path: String,
    },
}

/// Where the two eras' responses conflict, which one to give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiCompat {
    /// KES v0.24 and kms-go shapes (default).
    #[default]
    V024,
    /// KES v0.19.0 shapes (policy allow/deny as arrays, seed self-describe...).
    V019,
}

/// The `compat` section: our own, documented in README.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compat {
    /// Response shapes.
    pub api: ApiCompat,
    /// Format of new ciphertexts.
    pub ciphertext: CiphertextFormat,
}

/// A config error, with the line it refers to when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self { line: None, message: message.into() }
    }

    fn at(line: usize, message: impl Into<String>) -> Self {
        Self { line: Some(line), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a config file. `env` resolves `${NAME}`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let expanded = expand_env(text, env, &mut warnings)?;
        let raw: Raw = if expanded.trim().is_empty() {
            Raw::default()
        } else {
            serde_yaml::from_str(&expanded).map_err(|e| {
                let line = e.location().map(|l| l.line());
                let msg = e.to_string();
                // serde_yaml appends "at line X column Y"; we print the line first.
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                ConfigError { line, message: msg }
            })?
        };
        raw.validate(warnings).map_err(|mut e| {
            if e.line.is_none() {
                e.line = locate(text, &e.message);
            }
            e
        })
    }

    /// A config with no file: in-memory store, no policies (`--dev`, tests).
    pub fn empty() -> Self {
        Self {
            address: None,
            admin: AdminSetting::Unset,
            tls: TlsConfig::default(),
            api: BTreeMap::new(),
            policies: BTreeMap::new(),
            cache: CacheConfig::default(),
            log: LogConfig { error: true, audit: false },
            keys: Vec::new(),
            keystore: KeystoreConfig::Memory,
            compat: Compat::default(),
            warnings: Vec::new(),
        }
    }

    /// Whether any route skips authentication (then the TLS handshake must
    /// accept clients without certificates).
    pub fn any_skip_auth(&self) -> bool {
        self.api.values().any(|o| o.skip_auth)
    }
}

/// The line of the first value a validation message quotes ('...'), so
/// semantic errors point at the file like syntax errors do.
fn locate(text: &str, message: &str) -> Option<usize> {
    message
        .split('\'')
        .skip(1)
        .step_by(2)
        .filter(|q| !q.is_empty())
        .find_map(|quoted| text.lines().position(|l| l.contains(quoted)).map(|i| i + 1))
}

/// Replaces whole-scalar `${NAME}` values line by line, so serde_yaml's line
/// numbers stay right. Allow/deny patterns are never expanded. An unset
/// variable in an `identities` list skips that entry with a warning (as the
/// brief promises); anywhere else it is an error.
fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut keys: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut body = line.trim_start_matches(' ');
        let mut item_indent = indent;
        let is_item = body.starts_with("- ") || body == "-";
        if is_item {
            while keys.last().is_some_and(|(ind, _)| *ind > indent) {
                keys.pop();
            }
            body = body[1..].trim_start_matches(' ');
            item_indent = line.len() - body.len();
        }
        let (key, value) = match split_key(body) {
            Some((k, v)) => {
                while keys.last().is_some_and(|(ind, _)| *ind >= item_indent) {
                    keys.pop();
                }
                keys.push((item_indent, k.to_owned()));
                (Some(k), v)
            }
            None if is_item => (None, body),
            None => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        let context = if key.is_some() {
            keys.len().checked_sub(2).and_then(|j| keys.get(j)).map(|(_, k)| k.as_str())
        } else {
            keys.last().map(|(_, k)| k.as_str())
        };
        let own = key.or(context).unwrap_or("");
        let Some(name) = env_ref(value) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if matches!(own, "allow" | "deny" | "paths")
            || (key.is_none() && matches!(context, Some("allow" | "deny" | "paths")))
            || own == "version"
        {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let replacement = match env(name) {
            Some(v) => v,
            None if context == Some("identities") || own == "identities" => {
                warnings.push(format!(
                    "line {lineno}: environment variable '{name}' is not set; identity entry skipped"
                ));
                String::new()
            }
            None => {
                return Err(ConfigError::at(
                    lineno,
                    format!("environment variable '{name}' is not set"),
                ))
            }
        };
        let quoted = serde_json::to_string(&replacement).unwrap_or_else(|_| "\"\"".to_owned());
        let prefix_len = line.len() - value.len() - (line.len() - line.trim_end().len());
        let value_start = line[..prefix_len].len();
        out.push_str(&line[..value_start]);
        out.push_str(&quoted);
        out.push('\n');
    }
    Ok(out)
}

/// Splits `key: value` (value possibly empty); None if the line is no mapping entry.
fn split_key(body: &str) -> Option<(&str, &str)> {
    if body.starts_with('#') || body.is_empty() {
        return None;
    }
    let (k, v) = if let Some(rest) = body.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = rest[end + 1..].strip_prefix(':')?;
        (&rest[..end], after)
    } else {
        let idx = body.find(": ").or_else(|| body.strip_suffix(':').map(|s| s.len()))?;
        (&body[..idx], &body[idx + 1..])
    };
    Some((k.trim(), v.trim()))
}

/// `${NAME}` (optionally quoted, optionally followed by a comment) → NAME.
fn env_ref(value: &str) -> Option<&str> {
    let v = value.trim();
    let v = match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v)
        .trim();
    let name = v.strip_prefix("${")?.strip_suffix('}')?.trim();
    (!name.is_empty() && !name.contains(['{', '}', '$'])).then_some(name)
}

// ---------------------------------------------------------------------------
// The raw (serde) model: every field optional, unknown fields ignored.

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    version: Option<Text>,
    address: Option<Text>,
    root: Option<Text>,
    admin: Option<RawAdmin>,
    tls: Option<RawTls>,
    api: Option<BTreeMap<String, RawApi>>,
    policy: Option<BTreeMap<String, RawPolicy>>,
    cache: Option<RawCache>,
    log: Option<RawLog>,
    keys: Option<serde_yaml::Value>,
    keystore: Option<serde_yaml::Value>,
    compat: Option<RawCompat>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAdmin {
    identity: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTls {
    key: Option<Text>,
    cert: Option<Text>,
    password: Option<Text>,
    auth: Option<Switch>,
    ca: Option<Text>,
    proxy: Option<RawProxy>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawProxy {
    identities: Option<Vec<Text>>,
    header: Option<RawHeader>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHeader {
    cert: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawApi {
    skip_auth: Option<Switch>,
    timeout: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPolicy {
    allow: Option<Vec<Text>>,
    deny: Option<Vec<Text>>,
    paths: Option<Vec<Text>>,
    identities: Option<Vec<Text>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCache {
    expiry: Option<RawExpiry>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawExpiry {
    any: Option<Dur>,
    unused: Option<Dur>,
    offline: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLog {
    error: Option<LogLevel>,
    audit: Option<LogLevel>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCompat {
    api: Option<Text>,
    ciphertext: Option<Text>,
}

/// Any YAML scalar, as text (yaml.v2 kept raw text for string targets).
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Self(s)),
            serde_yaml::Value::Number(n) => Ok(Self(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Self(b.to_string())),
            serde_yaml::Value::Null => Ok(Self(String::new())),
            _ => Err(de::Error::custom("expected a single value, not a list or mapping")),
        }
    }
}

/// `on`/`off`, `true`/`false`, `yes`/`no` in any case.
struct Switch(bool);

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(s) = Text::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "y" => Ok(Self(true)),
            "off" | "false" | "no" | "n" | "" => Ok(Self(false)),
            other => Err(de::Error::custom(format!("invalid switch '{other}': use on or off"))),
        }
    }
}

/// A Go duration, also accepting a bare integer 0.
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(s) = Text::deserialize(d)?;
        parse_go_duration(&s).map(Self).map_err(de::Error::custom)
    }
}

/// A log switch: on/off or a level (v0.24); `true` means "at INFO or below".
struct LogLevel(i32);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(s) = Text::deserialize(d)?;
        let t = s.trim().to_ascii_uppercase();
        let base = |n: &str| match n {
            "DEBUG" => Some(-4),
            "INFO" => Some(0),
            "WARN" => Some(4),
            "ERROR" => Some(8),
            _ => None,
        };
        let level = match t.as_str() {
            "" | "ON" | "TRUE" => Some(0),
            "OFF" | "FALSE" => Some(9),
            _ => base(&t)
                .or_else(|| {
                    let (b, n) = t.split_once('+')?;
                    Some(base(b)? + n.parse::<i32>().ok()?)
                })
                .or_else(|| t.parse::<i32>().ok()),
        };
        level.map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid log level '{s}': use on, off, DEBUG, INFO, WARN or ERROR"
            ))
        })
    }
}

const OTHER_KEYSTORES: &[(&str, &[&str])] = &[
    ("vault", &["vault", "endpoint"]),
    ("fortanix", &["fortanix", "sdkms", "endpoint"]),
    ("aws", &["aws", "secretsmanager", "endpoint"]),
    ("gcp", &["gcp", "secretmanager", "project_id"]),
    ("azure", &["azure", "keyvault", "endpoint"]),
    ("gemalto", &["gemalto", "keysecure", "endpoint"]),
    ("generic", &["generic", "endpoint"]),
    ("entrust", &["entrust", "keycontrol", "endpoint"]),
];

fn lookup<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a serde_yaml::Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn scalar_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.trim().to_owned(),
        serde_yaml::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl Raw {
    fn validate(self, mut warnings: Vec<String>) -> Result<Config, ConfigError> {
        let text = |t: Option<Text>| t.map(|t| t.0.trim().to_owned()).filter(|s| !s.is_empty());
        let v1 = match text(self.version).as_deref() {
            None => false,
            Some("v1") => true,
            Some(v) => {
                return Err(ConfigError::new(format!("invalid config version '{v}': only v1")))
            }
        };
        let admin_text = text(self.admin.and_then(|a| a.identity)).or_else(|| text(self.root));
        let admin = AdminSetting::from_text(admin_text.as_deref().unwrap_or(""));
        if let AdminSetting::Disabled(v) = &admin {
            warnings.push(format!(
                "admin identity '{v}' is not an identity: the admin account is disabled"
            ));
        }

        let raw_tls = self.tls.unwrap_or_default();
        let mut proxy_identities = Vec::new();
        let mut proxy_header = DEFAULT_PROXY_HEADER.to_owned();
        if let Some(p) = raw_tls.proxy {
            for t in p.identities.unwrap_or_default() {
                let s = t.0.trim();
                if s.is_empty() {
                    continue;
                }
                match Identity::parse(s) {
                    Some(id) if Some(id) == admin.identity() => {
                        return Err(ConfigError::new(format!(
                            "invalid tls proxy: identity '{id}' is already admin"
                        )))
                    }
                    Some(id) => proxy_identities.push(id),
                    None => warnings
                        .push(format!("tls proxy identity '{s}' is not an identity; ignored")),
                }
            }
            if let Some(h) = p.header.and_then(|h| text(h.cert)) {
                proxy_header = h;
            }
        }
        let tls = TlsConfig {
            key: text(raw_tls.key),
            cert: text(raw_tls.cert),
            password: raw_tls.password.map(|t| t.0).filter(|s| !s.is_empty()),
            auth: raw_tls.auth.map(|s| s.0),
            ca: text(raw_tls.ca),
            proxy_identities,
            proxy_header,
        };

        let mut api = BTreeMap::new();
        for (path, o) in self.api.unwrap_or_default() {
            if !crate::api::ROUTES.iter().any(|r| r.path == path) {
                warnings.push(format!("api: unknown route '{path}' ignored"));
                continue;
            }
            let timeout = o.timeout.map(|d| d.0).filter(|d| !d.is_zero());
            api.insert(path, ApiOverride { skip_auth: o.skip_auth.is_some_and(|s| s.0), timeout });
        }

        let mut policies = BTreeMap::new();
        let mut owner: BTreeMap<Identity, String> = BTreeMap::new();
        for (name, p) in self.policy.unwrap_or_default() {
            if !valid_name(&name) {
                warnings.push(format!(
                    "policy name '{name}' contains characters the API cannot address"
                ));
            }
            let list = |v: Option<Vec<Text>>| {
                v.unwrap_or_default().into_iter().map(|t| t.0).collect::<Vec<_>>()
            };
            let mut allow = list(p.allow);
            allow.extend(list(p.paths));
            let deny = list(p.deny);
            for pat in allow.iter().chain(&deny) {
                if crate::policy::Pattern::new(pat).differs_under_prefix_matching() {
                    warnings.push(format!(
                        "policy '{name}': pattern '{pat}' grants something different on KES v0.24, which matches prefixes"
                    ));
                }
            }
            let mut identities = Vec::new();
            for t in p.identities.unwrap_or_default() {
                let s = t.0.trim();
                if s.is_empty() {
                    continue;
                }
                let Some(id) = Identity::parse(s) else {
                    warnings.push(format!(
                        "policy '{name}': '{s}' is not an identity and can never match a client"
                    ));
                    continue;
                };
                if Some(id) == admin.identity() {
                    return Err(ConfigError::new(format!(
                        "policy '{name}' contains the admin identity"
                    )));
                }
                if tls.proxy_identities.contains(&id) {
                    return Err(ConfigError::new(format!(
                        "policy '{name}' contains a TLS proxy identity"
                    )));
                }
                if let Some(other) = owner.insert(id, name.clone()) {
                    return Err(ConfigError::new(format!(
                        "identity '{id}' assigned to multiple policies: '{other}' and '{name}'"
                    )));
                }
                identities.push(id);
            }
            policies.insert(name, PolicyConfig { allow, deny, identities });
        }

        let mut cache = CacheConfig::default();
        if let Some(e) = self.cache.and_then(|c| c.expiry) {
            if let Some(d) = e.any {
                cache.any = d.0;
            }
            if let Some(d) = e.unused {
                cache.unused = d.0;
            }
            if let Some(d) = e.offline {
                cache.offline = d.0;
            }
        }

        let raw_log = self.log.unwrap_or_default();
        let log = LogConfig {
            error: raw_log.error.is_none_or(|l| l.0 <= 8),
            audit: raw_log.audit.map_or(v1, |l| l.0 <= 0),
        };

        // `keys:` is a list of declared keys, except in v0.13.5 files, where it
        // is the keystore mapping.
        let mut keystore_value = self.keystore;
        let mut keys = Vec::new();
        match self.keys {
            Some(serde_yaml::Value::Sequence(items)) => {
                for item in items {
                    let name = item.get("name").map(scalar_text).unwrap_or_default();
                    if name.is_empty() {
                        return Err(ConfigError::new("keys: every entry needs a non-empty name"));
                    }
                    if keys.contains(&name) {
                        return Err(ConfigError::new(format!(
                            "keys: key '{name}' is defined multiple times"
                        )));
                    }
                    if !valid_name(&name) {
                        return Err(ConfigError::new(format!(
                            "keys: key name '{name}' is empty, too long or contains invalid characters"
                        )));
                    }
                    keys.push(name);
                }
            }
            Some(m @ serde_yaml::Value::Mapping(_)) if keystore_value.is_none() => {
                keystore_value = Some(m)
            }
            Some(serde_yaml::Value::Null) | None => {}
            Some(_) => {
                return Err(ConfigError::new("keys: expected a list of '- name: <key>' entries"))
            }
        }

        let keystore = select_keystore(keystore_value.as_ref(), &mut warnings)?;

        let raw_compat = self.compat.unwrap_or_default();
        let compat = Compat {
            api: match text(raw_compat.api).as_deref() {
                None | Some("v0.24") => ApiCompat::V024,
                Some("v0.19") => ApiCompat::V019,
                Some(v) => {
                    return Err(ConfigError::new(format!(
                        "compat.api: '{v}' is not v0.24 or v0.19"
                    )))
                }
            },
            ciphertext: match text(raw_compat.ciphertext).as_deref() {
                None | Some("json") => CiphertextFormat::Json,
                Some("raw") => CiphertextFormat::Raw,
                Some(v) => {
                    return Err(ConfigError::new(format!(
                        "compat.ciphertext: '{v}' is not json or raw"
                    )))
                }
            },
        };

        Ok(Config {
            address: text(self.address),
            admin,
            tls,
            api,
            policies,
            cache,
            log,
            keys,
            keystore,
            compat,
            warnings,
        })
    }
}

fn select_keystore(
    v: Option<&serde_yaml::Value>,
    warnings: &mut Vec<String>,
) -> Result<KeystoreConfig, ConfigError> {
    let Some(v) = v else {
        warnings
            .push("no keystore configured: keys live in memory and are lost on exit".to_owned());
        return Ok(KeystoreConfig::Memory);
    };
    let fs_path = lookup(v, &["fs", "path"]).map(scalar_text).unwrap_or_default();
    let mut chosen: Vec<&str> = Vec::new();
    if !fs_path.is_empty() {
        chosen.push("fs");
    }
    for (kind, path) in OTHER_KEYSTORES {
        if lookup(v, path).map(scalar_text).is_some_and(|s| !s.is_empty()) {
            chosen.push(kind);
        }
    }
    match chosen.as_slice() {
        [] => {
            warnings.push(
                "no keystore configured: keys live in memory and are lost on exit".to_owned(),
            );
            Ok(KeystoreConfig::Memory)
        }
        ["fs"] => Ok(KeystoreConfig::Fs { path: fs_path }),
        [kind] => Err(ConfigError::new(format!("keystore '{kind}' is not supported yet"))),
        [a, b, ..] => Err(ConfigError::new(format!(
            "ambiguous keystore configuration: '{a}' and '{b}' specified at the same time"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    const OTHER: &str = "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb";

    fn env(name: &str) -> Option<String> {
        match name {
            "KES_ADMIN" => Some(ADMIN.into()),
            "APP_IDENTITY" => Some(OTHER.into()),
            _ => None,
        }
    }

    #[test]
    fn seed_style_file() {
        let text = format!(
            r#"
address: 0.0.0.0:7373
root: {ADMIN}
tls:
  key: ./server.key
  cert: ./server.cert
  proxy:
    identities: []
    header:
      cert: X-Tls-Client-Cert
cache:
  expiry:
    any:    5m0s
    unused: 20s
log:
  error: on
  audit: off
policy:
  my-policy:
    paths:
    - /v1/key/create/my-key
    - /v1/key/*/my-key-internal
    identities:
    - ${{APP_IDENTITY}}
    - ${{UNSET_IDENTITY}}
keys:
  - name: "my-key"
  - name: "my-key-2"
keystore:
  fs:
    path: ./keys # The key store directory
  vault:
    endpoint: ""
"#
        );
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.admin, AdminSetting::Identity(Identity::parse(ADMIN).unwrap()));
        assert_eq!(c.cache.unused, Duration::from_secs(20));
        assert_eq!(c.keys, vec!["my-key", "my-key-2"]);
        assert_eq!(c.keystore, KeystoreConfig::Fs { path: "./keys".into() });
        let p = &c.policies["my-policy"];
        assert_eq!(p.allow.len(), 2);
        assert_eq!(p.identities, vec![Identity::parse(OTHER).unwrap()]);
        assert!(c.warnings.iter().any(|w| w.contains("UNSET_IDENTITY")));
        assert!(c.warnings.iter().any(|w| w.contains("/v1/key/*/my-key-internal")));
        assert!(c.log.error && !c.log.audit);
    }

    #[test]
    fn v24_style_file() {
        let text = r#"
version: v1
admin:
  identity: ${KES_ADMIN}
tls:
  key: ./server.key
  cert: ./server.cert
  auth: off
api:
  /v1/metrics:
    skip_auth: true
    timeout: 15s
cache:
  expiry:
    any: 5m
    unused: 20s
    offline: 0s
log:
  error: INFO
  audit: off
keystore:
  fs:
    path: ./keys
compat:
  ciphertext: raw
"#;
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(c.tls.auth, Some(false));
        assert!(c.api["/v1/metrics"].skip_auth);
        assert!(c.any_skip_auth());
        assert_eq!(c.compat.ciphertext, CiphertextFormat::Raw);
        assert!(!c.log.audit);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse("cache:\n  expiry:\n    any: 5 minutes\n", &env).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = Config::parse("admin:\n  identity: ${NOPE}\n", &env).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("NOPE"));
        let e =
            Config::parse("keystore:\n  vault:\n    endpoint: https://v:8200\n", &env).unwrap_err();
        assert!(e.message.contains("not supported yet"), "{e}");
        let e = Config::parse("tls: [1, 2\n", &env).unwrap_err();
        assert!(e.line.is_some());
    }

    #[test]
    fn admin_disabled_and_duplicates() {
        let c = Config::parse("admin:\n  identity: disabled\n", &env).unwrap();
        assert_eq!(c.admin, AdminSetting::Disabled("disabled".into()));
        let dup =
            format!("policy:\n  a:\n    identities: [{OTHER}]\n  b:\n    identities: [{OTHER}]\n");
        assert!(Config::parse(&dup, &env).unwrap_err().message.contains("multiple policies"));
        let adm =
            format!("admin:\n  identity: {ADMIN}\npolicy:\n  a:\n    identities: [{ADMIN}]\n");
        assert!(Config::parse(&adm, &env).unwrap_err().message.contains("admin"));
    }

    #[test]
    fn patterns_are_never_expanded() {
        let text = "policy:\n  p:\n    allow:\n    - ${KES_ADMIN}\n";
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(c.policies["p"].allow, vec!["${KES_ADMIN}"]);
    }
}
