//! `kes key ...`: create, import, info, ls, rm, dek, encrypt, decrypt, hmac,
//! and key versions: rotate, rewrap, retire, purge.

use argh::FromArgs;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::output::{print_fields, print_json, print_list, tty};
use super::{decode, decode_opt, each_name};

/// Manage keys.
#[derive(FromArgs)]
#[argh(subcommand, name = "key")]
pub struct KeyCmd {
    #[argh(subcommand)]
    cmd: KeySub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum KeySub {
    Create(KeyCreate),
    Import(KeyImport),
    Info(KeyInfo),
    Ls(KeyLs),
    Rm(KeyRm),
    Dek(KeyDek),
    Encrypt(KeyEncrypt),
    Decrypt(KeyDecrypt),
    Hmac(KeyHmac),
    Rotate(KeyRotate),
    Rewrap(KeyRewrap),
    Retire(KeyRetire),
    Purge(KeyPurge),
}

conn_fields! {
    /// Rotate keys: a new version seals from now on (old data still decrypts).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "rotate")]
    struct KeyRotate {
        /// key names
        #[argh(positional)]
        names: Vec<String>,
    }
}

conn_fields! {
    /// Seal a ciphertext again under the key's newest version (it is opened
    /// with whichever version sealed it): kes key rewrap <name> <ciphertext>
    /// [<context>].
    #[derive(FromArgs)]
    #[argh(subcommand, name = "rewrap")]
    struct KeyRewrap {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
        /// base64 ciphertext
        #[argh(positional)]
        ciphertext: String,
        /// base64 context
        #[argh(positional)]
        context: Option<String>,
    }
}

conn_fields! {
    /// Retire a key's versions below a minimum: kes key retire <name> <min>.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "retire")]
    struct KeyRetire {
        /// key name
        #[argh(positional)]
        name: String,
        /// the lowest version that stays active
        #[argh(positional)]
        min: u32,
    }
}

conn_fields! {
    /// Delete the material of a key's retired versions (cannot be undone).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "purge")]
    struct KeyPurge {
        /// key name
        #[argh(positional)]
        name: String,
    }
}

conn_fields! {
    /// Create one or more keys.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "create")]
    struct KeyCreate {
        /// key names
        #[argh(positional)]
        names: Vec<String>,
    }
}

conn_fields! {
    /// Import a key: kes key import <name> <base64 32-byte key>.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "import")]
    struct KeyImport {
        /// key name
        #[argh(positional)]
        name: String,
        /// base64 of the 32 key bytes
        #[argh(positional)]
        key: String,
    }
}

conn_fields! {
    /// Show a key's metadata.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "info")]
    struct KeyInfo {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
    }
}

conn_fields! {
    /// List keys (a prefix, or a pattern with *).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "ls")]
    struct KeyLs {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// prefix or pattern
        #[argh(positional, default = "String::new()")]
        pattern: String,
    }
}

conn_fields! {
    /// Delete one or more keys.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "rm")]
    struct KeyRm {
        /// key names
        #[argh(positional)]
        names: Vec<String>,
    }
}

conn_fields! {
    /// Generate a data key: kes key dek <name> [<base64 context>].
    #[derive(FromArgs)]
    #[argh(subcommand, name = "dek")]
    struct KeyDek {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
        /// base64 context
        #[argh(positional)]
        context: Option<String>,
    }
}

conn_fields! {
    /// Encrypt a message (its raw bytes) with a key.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "encrypt")]
    struct KeyEncrypt {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
        /// the message
        #[argh(positional)]
        message: String,
    }
}

conn_fields! {
    /// Decrypt a base64 ciphertext: kes key decrypt <name> <ciphertext> [<context>].
    #[derive(FromArgs)]
    #[argh(subcommand, name = "decrypt")]
    struct KeyDecrypt {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
        /// base64 ciphertext
        #[argh(positional)]
        ciphertext: String,
        /// base64 context
        #[argh(positional)]
        context: Option<String>,
    }
}

conn_fields! {
    /// HMAC-SHA-256 of a message (its raw bytes) under a key's HMAC key.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "hmac")]
    struct KeyHmac {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// key name
        #[argh(positional)]
        name: String,
        /// the message
        #[argh(positional)]
        message: String,
    }
}

impl KeyCmd {
    pub fn run(self) -> Result<(), String> {
        match self.cmd {
            KeySub::Create(c) => each_name(&c.names, "create", &c.client()?, |client, n| {
                client.create_key(n).map_err(|e| format!("failed to create key \"{n}\": {e}"))
            }),
            KeySub::Import(c) => {
                let key = zeroize::Zeroizing::new(decode("key", &c.key)?);
                c.client()?
                    .import_key(&c.name, &key)
                    .map_err(|e| format!("failed to import \"{}\": {e}", c.name))
            }
            KeySub::Info(c) => c.run(),
            KeySub::Ls(c) => {
                let pattern = if c.pattern == "*" { String::new() } else { c.pattern.clone() };
                let names = c
                    .client()?
                    .list_keys(&pattern)
                    .map_err(|e| format!("failed to list keys: {e}"))?;
                print_list("Key", &names, c.json);
                Ok(())
            }
            KeySub::Rm(c) => each_name(&c.names, "rm", &c.client()?, |client, n| {
                client.delete_key(n).map_err(|e| format!("failed to remove key \"{n}\": {e}"))
            }),
            KeySub::Dek(c) => c.run(),
            KeySub::Encrypt(c) => c.run(),
            KeySub::Decrypt(c) => c.run(),
            KeySub::Hmac(c) => c.run(),
            KeySub::Rotate(c) => each_name(&c.names, "rotate", &c.client()?, |client, n| {
                let v = client
                    .rotate_key(n)
                    .map_err(|e| format!("failed to rotate key \"{n}\": {e}"))?;
                println!("{n}: version {v}");
                Ok(())
            }),
            KeySub::Rewrap(c) => c.run(),
            KeySub::Retire(c) => c
                .client()?
                .retire_key_versions(&c.name, c.min)
                .map_err(|e| format!("failed to retire versions of \"{}\": {e}", c.name)),
            KeySub::Purge(c) => {
                let gone = c
                    .client()?
                    .purge_key_versions(&c.name)
                    .map_err(|e| format!("failed to purge versions of \"{}\": {e}", c.name))?;
                let list: Vec<String> = gone.iter().map(u32::to_string).collect();
                println!("{}: purged versions [{}]", c.name, list.join(", "));
                Ok(())
            }
        }
    }
}

impl KeyInfo {
    /// Piped or `--json`: the server's JSON unchanged (a rotated key's
    /// `versions` included). On a terminal: the fields, and for a rotated
    /// key a table of its versions.
    fn run(self) -> Result<(), String> {
        let client = self.client()?;
        let failed = |e| format!("failed to describe key \"{}\": {e}", self.name);
        if self.json || !tty() {
            print_json(&client.describe_key_json(&self.name).map_err(failed)?);
            return Ok(());
        }
        let i = client.describe_key(&self.name).map_err(failed)?;
        let algorithm = i.algorithm.unwrap_or_default();
        let owner = i.created_by.unwrap_or_default();
        let version = i.version.map(|(n, m)| format!("{n} (active from {m})"));
        let mut fields = vec![
            ("Name", i.name.as_str()),
            ("Algorithm", &algorithm),
            ("Date", &i.created_at),
            ("Owner", &owner),
        ];
        if let Some(v) = &version {
            fields.push(("Version", v));
        }
        print_fields(&fields, false);
        if !i.versions.is_empty() {
            println!();
            for line in version_table(&i.versions) {
                println!("{line}");
            }
        }
        Ok(())
    }
}

/// A rotated key's versions as aligned lines under a bold header.
fn version_table(versions: &[kes_client::KeyVersion]) -> Vec<String> {
    let rows: Vec<[String; 5]> = versions
        .iter()
        .map(|v| {
            [
                v.version.to_string(),
                v.state.clone(),
                v.unseals.to_string(),
                v.created_at.clone(),
                v.created_by.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["Version", "State", "Unseals", "Created", "Created by"];
    let width =
        |c: usize| rows.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0);
    // Every column padded to its widest cell but the last.
    let widths: Vec<usize> = (0..header.len() - 1).map(width).collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            match widths.get(i) {
                Some(w) => l.push_str(&format!("{c:<w$}  ")),
                None => l.push_str(c),
            }
        }
        l.trim_end().to_owned()
    };
    let mut out = vec![super::output::bold(&line(&header))];
    out.extend(rows.iter().map(|r| line(&r.each_ref().map(String::as_str))));
    out
}

impl KeyRewrap {
    fn run(self) -> Result<(), String> {
        let ct = decode("ciphertext", &self.ciphertext)?;
        let ctx = decode_opt("context", self.context.as_ref())?;
        let new = self
            .client()?
            .rewrap(&self.name, &ct, &ctx)
            .map_err(|e| format!("failed to rewrap ciphertext: {e}"))?;
        print_fields(&[("ciphertext", &STANDARD.encode(new))], self.json);
        Ok(())
    }
}

impl KeyDek {
    fn run(self) -> Result<(), String> {
        let ctx = decode_opt("context", self.context.as_ref())?;
        let dek = self
            .client()?
            .generate_key(&self.name, &ctx)
            .map_err(|e| format!("failed to derive key: {e}"))?;
        let pt = zeroize::Zeroizing::new(STANDARD.encode(dek.plaintext.as_slice()));
        let ct = STANDARD.encode(&dek.ciphertext);
        print_fields(&[("plaintext", pt.as_str()), ("ciphertext", &ct)], self.json);
        Ok(())
    }
}

impl KeyEncrypt {
    fn run(self) -> Result<(), String> {
        let ct = self
            .client()?
            .encrypt(&self.name, self.message.as_bytes(), b"")
            .map_err(|e| format!("failed to encrypt message: {e}"))?;
        print_fields(&[("ciphertext", &STANDARD.encode(ct))], self.json);
        Ok(())
    }
}

impl KeyDecrypt {
    fn run(self) -> Result<(), String> {
        let ct = decode("ciphertext", &self.ciphertext)?;
        let ctx = decode_opt("context", self.context.as_ref())?;
        let pt = self
            .client()?
            .decrypt(&self.name, &ct, &ctx)
            .map_err(|e| format!("failed to decrypt ciphertext: {e}"))?;
        let pt = zeroize::Zeroizing::new(STANDARD.encode(pt.as_slice()));
        print_fields(&[("plaintext", pt.as_str())], self.json);
        Ok(())
    }
}

impl KeyHmac {
    fn run(self) -> Result<(), String> {
        let mac = self
            .client()?
            .hmac(&self.name, self.message.as_bytes())
            .map_err(|e| format!("failed to compute HMAC: {e}"))?;
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        print_fields(&[("hmac", &hex)], self.json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_an_aligned_table() {
        let v = |n: u32, state: &str, by: Option<&str>| kes_client::KeyVersion {
            version: n,
            state: state.into(),
            created_at: format!("2026-12-0{n}T10:00:00Z"),
            created_by: by.map(str::to_owned),
            unseals: if n == 1 { 12 } else { 0 },
        };
        let lines = version_table(&[v(1, "retired", Some("3ecf")), v(2, "active", None)]);
        assert_eq!(
            lines,
            [
                "Version  State    Unseals  Created               Created by",
                "1        retired  12       2026-12-01T10:00:00Z  3ecf",
                "2        active   0        2026-12-02T10:00:00Z",
            ]
        );
    }
}
