//! From the file as written ([`Raw`]) to a [`Config`]: one function per
//! section, each checking everything it can and saying what is wrong with
//! the offending value quoted (so that [`super::locate`] finds its line).
//! Problems that do not stop the server become warnings.

use std::collections::BTreeMap;

use super::schema::{
    scalar_text, Raw, RawApi, RawCache, RawCompat, RawHsm, RawLimits, RawLog, RawPolicy,
    RawRotation, RawTls, Text,
};
use super::{
    keystore, AdminSetting, ApiCompat, ApiOverride, CacheConfig, Compat, Config, ConfigError,
    HsmConfig, Limit, LogConfig, PolicyConfig, RotationRule, Secret, TlsConfig,
    DEFAULT_HANDSHAKE_RATE, DEFAULT_PROXY_HEADER, MIN_ROTATION_EVERY,
};
use crate::crypto::CiphertextFormat;
use crate::identity::Identity;
use crate::name::valid_name;
use crate::policy::Pattern;

/// A trimmed, non-empty scalar.
fn text(t: Option<Text>) -> Option<String> {
    t.map(|t| t.0.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Raw {
    pub(super) fn validate(self, mut warnings: Vec<String>) -> Result<Config, ConfigError> {
        let v1 = match text(self.version).as_deref() {
            None => false,
            Some("v1") => true,
            Some(v) => {
                return Err(ConfigError::new(format!("invalid config version '{v}': only v1")))
            }
        };
        let (admin_identity, admin_limits) = match self.admin {
            Some(a) => (a.identity, a.limits),
            None => (None, None),
        };
        let admin_limits = admin_limits.map(|l| limits("admin.limits", l)).transpose()?;
        let admin_text = text(admin_identity).or_else(|| text(self.root));
        let admin = AdminSetting::from_text(admin_text.as_deref().unwrap_or(""));
        if let AdminSetting::Disabled(v) = &admin {
            warnings.push(format!(
                "admin identity '{v}' is not an identity: the admin account is disabled"
            ));
        }
        let tls = tls(self.tls.unwrap_or_default(), &admin, &mut warnings)?;
        let api = api(self.api.unwrap_or_default(), &mut warnings);
        let policies = policies(self.policy.unwrap_or_default(), &admin, &tls, &mut warnings)?;
        let (keys, keystore_value) = declared_keys(self.keys, self.keystore)?;
        let cache = cache(self.cache);
        if cache.any.is_zero() {
            warnings.push("cache.expiry.any is 0: cached keys never expire, so a key deleted through another kes node keeps working on this one until it restarts".into());
        }
        Ok(Config {
            address: text(self.address),
            admin,
            tls,
            api,
            policies,
            cache,
            log: log(self.log.unwrap_or_default(), v1),
            keys,
            keystore: keystore::select(keystore_value.as_ref(), &mut warnings)?,
            compat: compat(self.compat.unwrap_or_default())?,
            rotation: rotation(self.rotation.unwrap_or_default())?,
            hsm: self.hsm.map(hsm).transpose()?.flatten(),
            limits: self.limits.map(|l| limits("limits", l)).transpose()?,
            admin_limits,
            warnings,
        })
    }
}

fn tls(
    raw: RawTls,
    admin: &AdminSetting,
    warnings: &mut Vec<String>,
) -> Result<TlsConfig, ConfigError> {
    let mut proxy_identities = Vec::new();
    let mut proxy_header = DEFAULT_PROXY_HEADER.to_owned();
    if let Some(p) = raw.proxy {
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
                None => {
                    warnings.push(format!("tls proxy identity '{s}' is not an identity; ignored"))
                }
            }
        }
        if let Some(h) = p.header.and_then(|h| text(h.cert)) {
            proxy_header = h;
        }
    }
    let handshake_rate = match text(raw.handshake_rate) {
        None => DEFAULT_HANDSHAKE_RATE,
        Some(t) => t.parse::<u32>().map_err(|_| {
            ConfigError::new(format!(
                "invalid tls.handshake_rate '{t}': a whole number of handshakes per second per client IP (0: unlimited)"
            ))
        })?,
    };
    Ok(TlsConfig {
        handshake_rate,
        key: text(raw.key),
        cert: text(raw.cert),
        password: raw.password.map(|t| t.0).filter(|s| !s.is_empty()),
        auth: raw.auth.map(|s| s.0),
        ca: text(raw.ca),
        proxy_identities,
        proxy_header,
    })
}

fn api(raw: BTreeMap<String, RawApi>, warnings: &mut Vec<String>) -> BTreeMap<String, ApiOverride> {
    let mut api = BTreeMap::new();
    for (path, o) in raw {
        if !crate::api::ROUTES.iter().any(|r| r.path == path) {
            warnings.push(format!("api: unknown route '{path}' ignored"));
            continue;
        }
        let timeout = o.timeout.map(|d| d.0).filter(|d| !d.is_zero());
        api.insert(path, ApiOverride { skip_auth: o.skip_auth.is_some_and(|s| s.0), timeout });
    }
    api
}

/// Policies, with every identity bound to at most one policy and never the
/// admin or a TLS proxy.
fn policies(
    raw: BTreeMap<String, RawPolicy>,
    admin: &AdminSetting,
    tls: &TlsConfig,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, PolicyConfig>, ConfigError> {
    let mut policies = BTreeMap::new();
    let mut owner: BTreeMap<Identity, String> = BTreeMap::new();
    for (name, p) in raw {
        if !valid_name(&name) {
            warnings
                .push(format!("policy name '{name}' contains characters the API cannot address"));
        }
        let list = |v: Option<Vec<Text>>| {
            v.unwrap_or_default().into_iter().map(|t| t.0).collect::<Vec<_>>()
        };
        let mut allow = list(p.allow);
        allow.extend(list(p.paths));
        let deny = list(p.deny);
        for pat in allow.iter().chain(&deny) {
            if Pattern::new(pat).differs_under_prefix_matching() {
                warnings.push(format!(
                    "policy '{name}': pattern '{pat}' grants something different on KES v0.24, which matches prefixes"
                ));
            }
        }
        let mut identities = Vec::new();
        for t in p.identities.unwrap_or_default() {
            let Some(id) = policy_identity(&name, t.0.trim(), admin, tls, warnings)? else {
                continue;
            };
            if let Some(other) = owner.insert(id, name.clone()) {
                return Err(ConfigError::new(format!(
                    "identity '{id}' assigned to multiple policies: '{other}' and '{name}'"
                )));
            }
            identities.push(id);
        }
        let limits = p.limits.map(|l| limits(&format!("policy.{name}.limits"), l)).transpose()?;
        policies.insert(name, PolicyConfig { allow, deny, identities, limits });
    }
    Ok(policies)
}

/// One entry of a policy's `identities`; `None` to skip it (empty, or not
/// an identity, which can never match and is warned about).
fn policy_identity(
    policy: &str,
    s: &str,
    admin: &AdminSetting,
    tls: &TlsConfig,
    warnings: &mut Vec<String>,
) -> Result<Option<Identity>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    let Some(id) = Identity::parse(s) else {
        warnings.push(format!(
            "policy '{policy}': '{s}' is not an identity and can never match a client"
        ));
        return Ok(None);
    };
    if Some(id) == admin.identity() {
        return Err(ConfigError::new(format!("policy '{policy}' contains the admin identity")));
    }
    if tls.proxy_identities.contains(&id) {
        return Err(ConfigError::new(format!("policy '{policy}' contains a TLS proxy identity")));
    }
    Ok(Some(id))
}

fn cache(raw: Option<RawCache>) -> CacheConfig {
    let mut cache = CacheConfig::default();
    let Some(raw) = raw else { return cache };
    if let Some(d) = raw.stale_wait {
        cache.stale_wait = d.0;
    }
    if let Some(e) = raw.expiry {
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
    cache
}

/// A `limits:` section: `rate` (requests per second) with an optional
/// `burst` (default: one second's worth), and/or `concurrent`.
fn limits(at: &str, raw: RawLimits) -> Result<Limit, ConfigError> {
    let number = |t: Option<Text>, field: &str| -> Result<Option<u32>, ConfigError> {
        let Some(t) = text(t) else { return Ok(None) };
        match t.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => {
                Err(ConfigError::new(format!("invalid {at}.{field} '{t}': a whole number above 0")))
            }
        }
    };
    let rate = number(raw.rate, "rate")?;
    let burst = number(raw.burst, "burst")?;
    let concurrent = number(raw.concurrent, "concurrent")?;
    if burst.is_some() && rate.is_none() {
        return Err(ConfigError::new(format!("invalid {at}: 'burst' needs a 'rate'")));
    }
    if rate.is_none() && concurrent.is_none() {
        return Err(ConfigError::new(format!("invalid {at}: set 'rate' or 'concurrent'")));
    }
    Ok(Limit { rate, burst: burst.or(rate).unwrap_or(0), concurrent })
}

/// `hsm.pkcs11`: all four fields, or a message naming the missing one.
fn hsm(raw: RawHsm) -> Result<Option<HsmConfig>, ConfigError> {
    let Some(p) = raw.pkcs11 else { return Ok(None) };
    let need = |v: Option<Text>, field: &str| {
        text(v).ok_or_else(|| ConfigError::new(format!("hsm.pkcs11: no '{field}' specified")))
    };
    Ok(Some(HsmConfig {
        module: need(p.module, "module")?,
        token: need(p.token, "token")?,
        pin: Secret::new(need(p.pin, "pin")?),
        key: need(p.key, "key")?,
    }))
}

/// `rotation:` entries: each needs a well-formed key glob and a period of
/// at least [`MIN_ROTATION_EVERY`].
fn rotation(raw: Vec<RawRotation>) -> Result<Vec<RotationRule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let n = i + 1;
        let Some(key) = text(r.key) else {
            return Err(ConfigError::new(format!("invalid rotation entry {n}: no 'key'")));
        };
        if !Pattern::new(&key).is_well_formed() || key.contains('/') {
            return Err(ConfigError::new(format!(
                "invalid rotation key '{key}': not a key name or glob"
            )));
        }
        let Some(every) = r.every.map(|d| d.0) else {
            return Err(ConfigError::new(format!("invalid rotation entry '{key}': no 'every'")));
        };
        if every < MIN_ROTATION_EVERY {
            return Err(ConfigError::new(format!(
                "invalid rotation every '{every:?}' for key {key}: must be at least 1s"
            )));
        }
        rules.push(RotationRule { key, every });
    }
    Ok(rules)
}

/// Errors are logged unless set above ERROR; audit is on by default only in
/// `version: v1` files.
fn log(raw: RawLog, v1: bool) -> LogConfig {
    LogConfig {
        error: raw.error.is_none_or(|l| l.0 <= 8),
        audit: raw.audit.map_or(v1, |l| l.0 <= 0),
    }
}

/// `keys:` is a list of declared keys, except in v0.13.5 files, where it is
/// the keystore mapping. Returns the declared names and the keystore value.
fn declared_keys(
    keys_value: Option<serde_yaml::Value>,
    keystore_value: Option<serde_yaml::Value>,
) -> Result<(Vec<String>, Option<serde_yaml::Value>), ConfigError> {
    let mut keys = Vec::new();
    match keys_value {
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
            return Ok((keys, Some(m)))
        }
        Some(serde_yaml::Value::Null) | None => {}
        Some(_) => {
            return Err(ConfigError::new("keys: expected a list of '- name: <key>' entries"))
        }
    }
    Ok((keys, keystore_value))
}

fn compat(raw: RawCompat) -> Result<Compat, ConfigError> {
    let api = match text(raw.api).as_deref() {
        None | Some("v0.24") => ApiCompat::V024,
        Some("v0.19") => ApiCompat::V019,
        Some(v) => {
            return Err(ConfigError::new(format!("compat.api: '{v}' is not v0.24 or v0.19")))
        }
    };
    let ciphertext = match text(raw.ciphertext).as_deref() {
        None | Some("json") => CiphertextFormat::Json,
        Some("raw") => CiphertextFormat::Raw,
        Some(v) => {
            return Err(ConfigError::new(format!("compat.ciphertext: '{v}' is not json or raw")))
        }
    };
    Ok(Compat { api, ciphertext })
}
