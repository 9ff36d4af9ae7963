//! `kes identity ...`: of, new, info, ls.

use argh::FromArgs;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kes_client::ApiKey;
use serde_json::json;

use super::output::{print_fields, print_json, print_list, print_patterns, tty};

/// Identities: alone, a new API key; or of, new, info, ls.
#[derive(FromArgs)]
#[argh(subcommand, name = "identity")]
pub struct IdentityCmd {
    #[argh(subcommand)]
    cmd: Option<IdentitySub>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum IdentitySub {
    Of(IdentityOf),
    New(IdentityNew),
    Info(IdentityInfo),
    Ls(IdentityLs),
}

/// Print the identity of certificate files or API keys: the hex SHA-256 of
/// the public key.
#[derive(FromArgs)]
#[argh(subcommand, name = "of")]
struct IdentityOf {
    /// PEM certificate files or kes:v1: API keys
    #[argh(positional)]
    args: Vec<String>,
}

/// Create a new API key (and, with --key/--cert, a certificate and key file).
#[derive(FromArgs)]
#[argh(subcommand, name = "new")]
struct IdentityNew {
    /// write the private key here (PKCS#8 PEM, mode 0600)
    #[argh(option)]
    key: Option<String>,
    /// write a self-signed client certificate here
    #[argh(option)]
    cert: Option<String>,
    /// overwrite existing files
    #[argh(switch, short = 'f')]
    force: bool,
    /// IP address SAN (repeatable)
    #[argh(option)]
    ip: Vec<std::net::IpAddr>,
    /// DNS name SAN (repeatable)
    #[argh(option)]
    dns: Vec<String>,
    /// validity, e.g. 720h (default: no practical expiry)
    #[argh(option)]
    expiry: Option<String>,
    /// certificate subject (common name)
    #[argh(positional)]
    subject: Option<String>,
}

conn_fields! {
    /// Describe an identity (default: your own, as the server sees it).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "info")]
    struct IdentityInfo {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// identity to describe
        #[argh(positional)]
        identity: Option<String>,
    }
}

conn_fields! {
    /// List identities.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "ls")]
    struct IdentityLs {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// prefix
        #[argh(positional, default = "String::new()")]
        prefix: String,
    }
}

impl IdentityCmd {
    pub fn run(self) -> Result<(), String> {
        match self.cmd {
            // As KES v0.24: `kes identity` alone makes a new API key.
            None => identity_new(None, None, false, &Default::default()),
            Some(IdentitySub::Of(of)) => print_identities(&of.args),
            Some(IdentitySub::New(n)) => new_identity(n),
            Some(IdentitySub::Info(i)) => i.run(),
            Some(IdentitySub::Ls(l)) => {
                let ids = l
                    .client()?
                    .list_identities(&l.prefix)
                    .map_err(|e| format!("failed to list identities: {e}"))?;
                print_list("Identity", &ids, l.json);
                Ok(())
            }
        }
    }
}

fn new_identity(n: IdentityNew) -> Result<(), String> {
    let expiry = match &n.expiry {
        Some(e) => {
            Some(kes_core::time::parse_go_duration(e).map_err(|e| format!("--expiry: {e}"))?)
        }
        None => None,
    };
    let opts = kes_client::CertificateOptions { subject: n.subject, dns: n.dns, ips: n.ip, expiry };
    identity_new(n.key.as_deref(), n.cert.as_deref(), n.force, &opts)
}

fn print_identities(args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("no certificate or API key specified. See 'kes identity of --help'".into());
    }
    for a in args {
        let id = identity_of(a)?;
        if args.len() == 1 {
            println!("{id}");
        } else {
            println!("{a}: {id}");
        }
    }
    Ok(())
}

/// Print identities: of a certificate file or an API key, a new API key, or
/// who the server says you are.
fn identity_of(arg: &str) -> Result<String, String> {
    if arg.starts_with("kes:v1:") {
        let k = ApiKey::parse(arg).map_err(|e| e.to_string())?;
        return k.identity().map(|i| i.to_string()).map_err(|e| e.to_string());
    }
    let certs = kes_adapters::tls::load_certs(std::path::Path::new(arg))?;
    let id = kes_core::Identity::from_certificate(&certs[0]).map_err(|e| format!("{arg}: {e}"))?;
    Ok(id.to_string())
}

/// `kes identity new`: a new API key, optionally written out as a
/// certificate and key file.
fn identity_new(
    key_file: Option<&str>,
    cert_file: Option<&str>,
    force: bool,
    opts: &kes_client::CertificateOptions,
) -> Result<(), String> {
    let key = ApiKey::generate();
    let id = key.identity().map_err(|e| e.to_string())?;
    if key_file.is_some() != cert_file.is_some() {
        return Err("--key and --cert go together".into());
    }
    if let (Some(kf), Some(cf)) = (key_file, cert_file) {
        for f in [kf, cf] {
            if !force && std::path::Path::new(f).exists() {
                return Err(format!("'{f}' already exists; use --force to overwrite"));
            }
        }
        let (cert, _) = key.certificate_with(opts).map_err(|e| e.to_string())?;
        let cert_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            wrap64(&STANDARD.encode(cert.as_ref()))
        );
        let key_pem = zeroize::Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            wrap64(&STANDARD.encode(key.pkcs8().as_slice()))
        ));
        write_private(kf, &key_pem)?;
        std::fs::write(cf, cert_pem).map_err(|e| format!("{cf}: {e}"))?;
    }
    if tty() {
        println!(
            "\nYour API key:\n\n   {}\n\nThis is the only time it is shown. Keep it secret.\n",
            key.secret_text().as_str()
        );
        println!("Your identity:\n\n   {id}\n");
    } else {
        println!("{}", json!({"api_key": key.secret_text().as_str(), "identity": id.to_string()}));
    }
    Ok(())
}

fn wrap64(s: &str) -> String {
    s.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_private(path: &str, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{path}: {e}"))
}

impl IdentityInfo {
    /// Readable text on a terminal, JSON when piped or with `--json`.
    fn run(self) -> Result<(), String> {
        let c = self.client()?;
        let v = match &self.identity {
            Some(id) => c.describe_identity(id),
            None => c.describe_self(),
        }
        .map_err(|e| format!("failed to describe identity: {e}"))?;
        if self.json || !tty() {
            print_json(&v);
            return Ok(());
        }
        let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let identity = self.identity.clone().unwrap_or_else(|| text("identity"));
        let role = if v["admin"].as_bool() == Some(true) { "Admin" } else { "User" };
        let policy = match &v["policy"] {
            serde_json::Value::String(p) => p.clone(),
            _ => text("policy_name"),
        };
        let mut fields = vec![("Identity", identity), ("Role", role.to_owned())];
        if !policy.is_empty() {
            fields.push(("Policy", policy));
        }
        fields.push(("Created At", text("created_at")));
        fields.push(("Created By", text("created_by")));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        print_fields(&fields, false);
        print_patterns(&v);
        Ok(())
    }
}
