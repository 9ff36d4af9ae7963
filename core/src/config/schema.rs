//! The file as written, before validation: one serde model that reads both
//! schema eras (config.md §2-3). Every field is optional and unknown fields
//! are ignored, as KES does. Where the eras differ:
//! - admin: v0.24 `admin.identity`, the seed's top-level `root`;
//! - policies: v0.24 `allow`/`deny`, the seed's `paths` (allow);
//! - `keys`: a list of declared keys, except in v0.13.5 files, where it is
//!   the keystore mapping (sorted out in validation);
//! - `version: v1` marks a v0.24 file (audit logging defaults on).
//!
//! Scalars are read as text as Go's yaml.v2 did, then interpreted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::time::parse_go_duration;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Raw {
    pub(super) version: Option<Text>,
    pub(super) address: Option<Text>,
    pub(super) root: Option<Text>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) tls: Option<RawTls>,
    pub(super) api: Option<BTreeMap<String, RawApi>>,
    pub(super) policy: Option<BTreeMap<String, RawPolicy>>,
    pub(super) cache: Option<RawCache>,
    pub(super) log: Option<RawLog>,
    pub(super) keys: Option<serde_yaml::Value>,
    pub(super) keystore: Option<serde_yaml::Value>,
    pub(super) compat: Option<RawCompat>,
    pub(super) rotation: Option<Vec<RawRotation>>,
    pub(super) hsm: Option<RawHsm>,
    pub(super) limits: Option<RawLimits>,
}

/// A `limits:` section (policy, admin, default): an extension of KES.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLimits {
    pub(super) rate: Option<Text>,
    pub(super) burst: Option<Text>,
    pub(super) concurrent: Option<Text>,
}

/// The `hsm:` section (an extension of KES).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHsm {
    pub(super) pkcs11: Option<RawPkcs11>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawPkcs11 {
    pub(super) module: Option<Text>,
    pub(super) token: Option<Text>,
    pub(super) pin: Option<Text>,
    pub(super) key: Option<Text>,
}

/// One `rotation:` entry (an extension of KES).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawRotation {
    pub(super) key: Option<Text>,
    pub(super) every: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAdmin {
    pub(super) identity: Option<Text>,
    pub(super) limits: Option<RawLimits>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawTls {
    pub(super) key: Option<Text>,
    pub(super) cert: Option<Text>,
    pub(super) password: Option<Text>,
    pub(super) auth: Option<Switch>,
    pub(super) ca: Option<Text>,
    pub(super) proxy: Option<RawProxy>,
    pub(super) handshake_rate: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawProxy {
    pub(super) identities: Option<Vec<Text>>,
    pub(super) header: Option<RawHeader>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHeader {
    pub(super) cert: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawApi {
    pub(super) skip_auth: Option<Switch>,
    pub(super) timeout: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawPolicy {
    pub(super) allow: Option<Vec<Text>>,
    pub(super) deny: Option<Vec<Text>>,
    pub(super) paths: Option<Vec<Text>>,
    pub(super) identities: Option<Vec<Text>>,
    pub(super) limits: Option<RawLimits>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCache {
    pub(super) expiry: Option<RawExpiry>,
    pub(super) stale_wait: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawExpiry {
    pub(super) any: Option<Dur>,
    pub(super) unused: Option<Dur>,
    pub(super) offline: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLog {
    pub(super) error: Option<LogLevel>,
    pub(super) audit: Option<LogLevel>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCompat {
    pub(super) api: Option<Text>,
    pub(super) ciphertext: Option<Text>,
}

/// Any YAML scalar, as text (yaml.v2 kept raw text for string targets).
pub(super) struct Text(pub(super) String);

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
pub(super) struct Switch(pub(super) bool);

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
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(s) = Text::deserialize(d)?;
        parse_go_duration(&s).map(Self).map_err(de::Error::custom)
    }
}

/// A log switch: on/off or a level (v0.24); `true` means "at INFO or below".
pub(super) struct LogLevel(pub(super) i32);

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

/// A scalar inside an untyped YAML value (keystore sections, `keys:`).
pub(super) fn scalar_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.trim().to_owned(),
        serde_yaml::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}
