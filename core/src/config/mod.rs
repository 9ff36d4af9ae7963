//! The KES YAML config file, both eras (config.md), parsed without touching
//! the environment: `${VAR}` references resolve through a lookup function the
//! adapter passes in.
//!
//! Errors carry the line they refer to, so `kes server` can say
//! "config.yml line 12: ..." instead of leaving the operator to guess.

//!
//! Modules by concern: [`schema`] (the file as written, both eras),
//! [`env`] (`${VAR}` expansion), [`unknown`] (warnings for unknown keys),
//! [`validate`] (one function per section), [`keystore`] (one module per
//! key store section).

mod cloud;
mod env;
mod keystore;
mod schema;
mod unknown;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::crypto::CiphertextFormat;
use crate::identity::Identity;
pub use crate::limits::Limit;
use env::expand_env;
use schema::Raw;

pub use cloud::{
    AzureAuth, AzureConfig, EntrustConfig, FortanixConfig, GcpConfig, GcpCredentials,
    KeySecureConfig,
};

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
    /// Scheduled key rotation (`rotation:`, an extension), first match wins.
    pub rotation: Vec<RotationRule>,
    /// Key values sealed at rest by an HSM (`hsm:`, an extension).
    pub hsm: Option<HsmConfig>,
    /// The budget of identities whose policy names none (`limits:`).
    pub limits: Option<Limit>,
    /// The admin's budget (`admin.limits`); unlimited when unset.
    pub admin_limits: Option<Limit>,
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
    /// Full TLS handshakes per client IP per second (`tls.handshake_rate`,
    /// an extension; 0: unlimited; [`DEFAULT_HANDSHAKE_RATE`] for a file
    /// that does not say). Over it, connections are closed before the
    /// handshake.
    pub handshake_rate: u32,
}

/// `tls.handshake_rate` when unset: generous for any real client (each
/// TLS session resumes or keeps its connection), low enough that one
/// address cannot keep a core busy with handshakes.
pub const DEFAULT_HANDSHAKE_RATE: u32 = 200;

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
            // Off for configs built in code (tests, embedders, --dev); a
            // config file gets DEFAULT_HANDSHAKE_RATE unless it says.
            handshake_rate: 0,
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
    /// Each bound identity's budget (`limits:`, an extension).
    pub limits: Option<Limit>,
}

/// The `hsm.pkcs11` section: every key value written to the store is
/// sealed by `key` on the token, and unsealed there when read.
#[derive(Clone, Debug)]
pub struct HsmConfig {
    /// The vendor's PKCS#11 library, loaded at start-up.
    pub module: String,
    /// The token's label (slot ids are not stable).
    pub token: String,
    /// The user PIN.
    pub pin: Secret,
    /// The label of an AES-256 secret key on the token.
    pub key: String,
}

/// One `rotation:` entry: keys whose name matches `key` get a new version
/// once their newest version is `every` old.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationRule {
    /// A key name or a glob, matched as in policies.
    pub key: String,
    /// The longest a key's newest version may seal before the next.
    pub every: Duration,
}

/// The shortest `rotation.every` accepted: the schedule checks keys about
/// every `every / 8` (at least each second), so shorter periods could not be
/// kept.
pub const MIN_ROTATION_EVERY: Duration = Duration::from_secs(1);

/// Key cache expiry settings (keystore.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Empty the cache this often.
    pub any: Duration,
    /// Evict keys unused for this long.
    pub unused: Duration,
    /// Keep serving cached keys this long while the store is unreachable.
    pub offline: Duration,
    /// With `offline` set: how long a request for a key whose cache entry
    /// has expired waits for the store before the expired copy answers it
    /// while the re-read goes on (stale-while-revalidate). Zero: requests
    /// wait for the store, as before. `cache.stale_wait` (an extension).
    pub stale_wait: Duration,
}

impl Default for CacheConfig {
    /// The documented intent (any 5m, unused 30s), not v0.24's defaulting bug.
    fn default() -> Self {
        Self {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
            stale_wait: DEFAULT_STALE_WAIT,
        }
    }
}

/// How long a request for a key with a stale copy waits for the store by
/// default: a healthy store answers well within it, a slow or frozen one
/// costs a caller no more than this.
pub const DEFAULT_STALE_WAIT: Duration = Duration::from_millis(200);

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
    /// HashiCorp Vault (or OpenBao) K/V engine.
    Vault(Box<VaultConfig>),
    /// AWS Secrets Manager.
    Aws(Box<AwsConfig>),
    /// GCP Secret Manager.
    Gcp(Box<GcpConfig>),
    /// Azure Key Vault.
    Azure(Box<AzureConfig>),
    /// Thales CipherTrust Manager / Gemalto KeySecure.
    KeySecure(Box<KeySecureConfig>),
    /// Fortanix DSM.
    Fortanix(Box<FortanixConfig>),
    /// Entrust KeyControl.
    Entrust(Box<EntrustConfig>),
}

/// `keystore.aws.secretsmanager` (config.md §4.3, keystore.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsConfig {
    /// `https://secretsmanager.<region>.amazonaws.com` (a bare host gets https://).
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    /// KMS key that encrypts new secrets (default: the account's).
    pub kms_key: String,
    /// Static credentials; `None`: the `AWS_*` environment variables.
    pub credentials: Option<AwsCredentials>,
}

/// An AWS access key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// `keystore.vault` (config.md §4.2, keystore.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultConfig {
    /// `https://host:port` (or `http://`, warned about).
    pub endpoint: String,
    /// K/V mount path (default `kv`).
    pub engine: String,
    /// K/V API version.
    pub kv: KvVersion,
    /// Namespace sent as `X-Vault-Namespace` on data calls.
    pub namespace: String,
    /// Path prefix inside the engine.
    pub prefix: String,
    /// How kes logs in.
    pub auth: VaultAuth,
    /// Client certificate and key for mTLS to Vault, if any.
    pub tls_cert: Option<(String, String)>,
    /// CA file or directory to verify Vault (default: system roots).
    pub tls_ca: Option<String>,
    /// How often Vault's seal status is polled.
    pub ping: Duration,
    /// Wrap stored values with this transit engine and key (v0.24).
    pub transit: Option<(String, String)>,
}

/// The K/V secrets engine API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    /// v1: one value per path, no versions; create is read-then-write.
    V1,
    /// v2: versioned; create is atomic with `cas: 0`.
    V2,
}

/// How kes authenticates to Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultAuth {
    /// AppRole login with a role and secret id.
    AppRole {
        /// Auth mount (default `approle`).
        engine: String,
        /// role_id.
        id: String,
        /// secret_id.
        secret: Secret,
        /// Namespace of the login call (`/` or empty: root).
        namespace: String,
    },
    /// Kubernetes service-account login.
    Kubernetes {
        /// Auth mount (default `kubernetes`).
        engine: String,
        /// The Vault role.
        role: String,
        /// The JWT itself, or a file holding it (re-read at each login).
        jwt: Secret,
        /// Namespace of the login call.
        namespace: String,
    },
}

/// A credential from the config: never printed, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The credential, for the one request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
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
        let mut warnings = unknown::warnings(text);
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
            rotation: Vec::new(),
            hsm: None,
            limits: None,
            admin_limits: None,
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
        assert_eq!(c.cache.stale_wait, DEFAULT_STALE_WAIT);
    }

    #[test]
    fn stale_wait_is_read_and_checked() {
        let c = Config::parse("cache:\n  expiry:\n    offline: 1h\n  stale_wait: 100ms\n", &env)
            .unwrap();
        assert_eq!(c.cache.stale_wait, Duration::from_millis(100));
        assert_eq!(c.cache.offline, Duration::from_secs(3600));
        assert!(!c.warnings.iter().any(|w| w.contains("unknown")), "{:?}", c.warnings);
        let e = Config::parse("cache:\n  stale_wait: soon\n", &env).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn rotation_rules_are_read_and_checked() {
        let text =
            "rotation:\n  - key: \"minio-*\"\n    every: 720h\n  - key: app\n    every: 4s\n";
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(
            c.rotation,
            vec![
                RotationRule { key: "minio-*".into(), every: Duration::from_secs(720 * 3600) },
                RotationRule { key: "app".into(), every: Duration::from_secs(4) },
            ]
        );
        assert!(!c.warnings.iter().any(|w| w.contains("unknown")), "{:?}", c.warnings);
        assert!(Config::parse("", &env).unwrap().rotation.is_empty());
        for (bad, line, says) in [
            ("rotation:\n  - key: minio-x\n    every: 500ms\n", 3, "at least 1s"),
            ("rotation:\n  - key: minio-x\n", 2, "no 'every'"),
            ("rotation:\n  - every: 1h\n", 0, "no 'key'"),
            ("rotation:\n  - key: \"[minio\"\n    every: 1h\n", 2, "not a key name or glob"),
            ("rotation:\n  - key: minio/x\n    every: 1h\n", 2, "not a key name or glob"),
            ("rotation:\n  - key: minio-x\n    every: monthly\n", 2, "monthly"),
            ("rotation:\n  key: minio-x\n", 2, ""),
        ] {
            let e = Config::parse(bad, &env).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
            if line > 0 {
                assert_eq!(e.line, Some(line), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn hsm_section_is_read_and_checked() {
        let text = "hsm:\n  pkcs11:\n    module: /usr/lib/softhsm/libsofthsm2.so\n    token: kes\n    pin: ${PIN}\n    key: kes-wrap\n";
        let env = |n: &str| (n == "PIN").then(|| "1234".to_owned());
        let c = Config::parse(text, &env).unwrap();
        let h = c.hsm.unwrap();
        assert_eq!(
            (h.module.as_str(), h.token.as_str(), h.key.as_str()),
            ("/usr/lib/softhsm/libsofthsm2.so", "kes", "kes-wrap")
        );
        assert_eq!(h.pin.expose(), "1234");
        assert!(format!("{:?}", h.pin).contains("redacted"));
        assert!(!c.warnings.iter().any(|w| w.contains("unknown")), "{:?}", c.warnings);
        let e = Config::parse("hsm:\n  pkcs11:\n    module: m\n    pin: p\n    key: k\n", &env)
            .unwrap_err();
        assert!(e.message.contains("no 'token'"), "{e}");
        assert!(Config::parse("hsm:\n", &env).unwrap().hsm.is_none());
    }

    #[test]
    fn limits_are_read_and_checked() {
        let text = "admin:\n  identity: disabled\n  limits:\n    rate: 5\npolicy:\n  minio:\n    allow: [/v1/key/generate/*]\n    limits:\n      rate: 500\n      burst: 1000\n      concurrent: 64\nlimits:\n  concurrent: 8\ntls:\n  handshake_rate: 50\n";
        let c = Config::parse(text, &env).unwrap();
        let l = |rate, burst, concurrent| Some(Limit { rate, burst, concurrent });
        assert_eq!(c.policies["minio"].limits, l(Some(500), 1000, Some(64)));
        assert_eq!(c.limits, l(None, 0, Some(8)));
        assert_eq!(c.admin_limits, l(Some(5), 5, None), "burst defaults to one second's worth");
        assert_eq!(c.tls.handshake_rate, 50);
        assert!(!c.warnings.iter().any(|w| w.contains("unknown")), "{:?}", c.warnings);
        assert_eq!(Config::parse("", &env).unwrap().tls.handshake_rate, DEFAULT_HANDSHAKE_RATE);
        for (bad, says) in [
            ("limits:\n  rate: 0\n", "invalid limits.rate '0'"),
            ("limits:\n  burst: 10\n", "'burst' needs a 'rate'"),
            ("limits: {}\n", "set 'rate' or 'concurrent'"),
            (
                "policy:\n  p:\n    limits:\n      rate: lots\n",
                "invalid policy.p.limits.rate 'lots'",
            ),
            ("tls:\n  handshake_rate: -1\n", "invalid tls.handshake_rate '-1'"),
        ] {
            let e = Config::parse(bad, &env).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse("cache:\n  expiry:\n    any: 5 minutes\n", &env).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = Config::parse("admin:\n  identity: ${NOPE}\n", &env).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("NOPE"));
        let e =
            Config::parse("keystore:\n  generic:\n    endpoint: https://p\n", &env).unwrap_err();
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
