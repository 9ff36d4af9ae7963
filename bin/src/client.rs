//! The client commands: `kes key|policy|identity|ls|status|metric|log`.
//!
//! Connection settings come from the environment as in KES (cli.md §2):
//! `KES_SERVER` (comma-separated endpoints), `KES_CLIENT_CERT` +
//! `KES_CLIENT_KEY` or `KES_API_KEY` (MinIO's `MINIO_KES_*` names first), and
//! `KES_CLIENT_KEY_PASSWORD` for a legacy-encrypted key. `-s/--server` and
//! `-k/--insecure` override them.

use std::io::IsTerminal;

use argh::FromArgs;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kes_client::blocking::Client;
use kes_client::{ApiKey, ClientBuilder, Credentials};
use serde_json::{json, Value};

fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok())
}

fn connect(server: Option<&str>, insecure: bool) -> Result<Client, String> {
    let servers = server
        .map(str::to_owned)
        .or_else(|| env_first(&["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"]))
        .unwrap_or_else(|| "127.0.0.1:7373".into());
    let endpoints: Vec<&str> =
        servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let api_key = env_first(&["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"])
        .filter(|s| !s.is_empty());
    let key = env_first(&["MINIO_KES_KEY_FILE", "KES_CLIENT_KEY", "MINIO_KES_CLIENT_KEY"])
        .filter(|s| !s.is_empty());
    let cert = env_first(&["MINIO_KES_CERT_FILE", "KES_CLIENT_CERT", "MINIO_KES_CLIENT_CERT"])
        .filter(|s| !s.is_empty());
    let creds = match (api_key, cert, key) {
        (Some(_), Some(_), _) => return Err("API key and certificate file cannot be used at the same time".into()),
        (Some(_), None, Some(_)) => return Err("API key and private key file cannot be used at the same time".into()),
        (Some(k), None, None) => Credentials::ApiKey(ApiKey::parse(&k).map_err(|e| format!("parsing API key: {e}"))?),
        (None, Some(c), Some(k)) => {
            let pw = std::env::var("KES_CLIENT_KEY_PASSWORD").ok();
            Credentials::from_files(&c, &k, pw.as_deref()).map_err(|e| e.to_string())?
        }
        (None, Some(_), None) => return Err("no private key file specified. Consider setting KES_CLIENT_KEY".into()),
        (None, None, Some(_)) => return Err("no certificate file specified. Consider setting KES_CLIENT_CERT".into()),
        (None, None, None) => return Err("no API key specified. Consider setting KES_API_KEY (or KES_CLIENT_CERT and KES_CLIENT_KEY)".into()),
    };
    let mut b = ClientBuilder::new(endpoints).credentials(creds).insecure(insecure);
    if let Ok(ca) = std::env::var("KES_CAPATH") {
        b = b.ca_file(ca);
    }
    b.build_blocking().map_err(|e| e.to_string())
}

fn tty() -> bool {
    std::io::stdout().is_terminal()
}

fn bold(s: &str) -> String {
    if tty() && std::env::var_os("NO_COLOR").is_none() {
        format!("\u{1b}[1m{s}\u{1b}[0m")
    } else {
        s.to_owned()
    }
}

fn print_json(v: &Value) {
    if tty() {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{v}");
    }
}

fn print_list(header: &str, items: &[String], as_json: bool) {
    if as_json || !tty() {
        if as_json {
            println!("{}", Value::from(items.to_vec()));
        } else {
            for i in items {
                println!("{i}");
            }
        }
        return;
    }
    if !items.is_empty() {
        println!("{}", bold(header));
        for i in items {
            println!("{i}");
        }
    }
}

/// Runs `f` for each name in order, stopping at the first failure (as KES
/// does: earlier ones stay done).
fn each_name(
    names: &[String],
    cmd: &str,
    client: &Client,
    f: impl Fn(&Client, &str) -> Result<(), String>,
) -> Result<(), String> {
    if names.is_empty() {
        return Err(format!("no key name specified. See 'kes key {cmd} --help'"));
    }
    names.iter().try_for_each(|n| f(client, n))
}

/// An optional base64 argument (absent: empty).
fn decode_opt(what: &str, s: Option<&String>) -> Result<Vec<u8>, String> {
    s.map_or(Ok(Vec::new()), |s| decode(what, s))
}

fn decode(what: &str, s: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(s.trim()).map_err(|e| format!("invalid {what}: {e}"))
}

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
}

macro_rules! conn_fields {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        $vis struct $name {
            /// server endpoint(s), comma-separated (default: $KES_SERVER)
            #[argh(option, short = 's')]
            server: Option<String>,
            /// do not verify the server's certificate
            #[argh(switch, short = 'k')]
            insecure: bool,
            $($body)*
        }
        impl $name {
            fn client(&self) -> Result<Client, String> {
                connect(self.server.as_deref(), self.insecure)
            }
        }
    };
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
            KeySub::Info(c) => {
                let i = c
                    .client()?
                    .describe_key(&c.name)
                    .map_err(|e| format!("failed to describe keys: {e}"))?;
                let v = json!({"name": i.name, "algorithm": i.algorithm, "created_at": i.created_at, "created_by": i.created_by});
                if c.json || !tty() {
                    print_json(&v);
                } else {
                    println!("{:<11}{}", bold("Name"), i.name);
                    println!("{:<11}{}", bold("Algorithm"), i.algorithm.unwrap_or_default());
                    println!("{:<11}{}", bold("Date"), i.created_at);
                    println!("{:<11}{}", bold("Owner"), i.created_by.unwrap_or_default());
                }
                Ok(())
            }
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
            KeySub::Dek(c) => {
                let ctx = decode_opt("context", c.context.as_ref())?;
                let dek = c
                    .client()?
                    .generate_key(&c.name, &ctx)
                    .map_err(|e| format!("failed to derive key: {e}"))?;
                let (pt, ct) =
                    (STANDARD.encode(dek.plaintext.as_slice()), STANDARD.encode(&dek.ciphertext));
                if tty() && !c.json {
                    println!("\nplaintext:  {pt}\nciphertext: {ct}");
                } else {
                    println!("{}", json!({"plaintext": pt, "ciphertext": ct}));
                }
                Ok(())
            }
            KeySub::Encrypt(c) => {
                let ct = c
                    .client()?
                    .encrypt(&c.name, c.message.as_bytes(), b"")
                    .map_err(|e| format!("failed to encrypt message: {e}"))?;
                let ct = STANDARD.encode(ct);
                if tty() && !c.json {
                    println!("\nciphertext: {ct}");
                } else {
                    println!("{}", json!({"ciphertext": ct}));
                }
                Ok(())
            }
            KeySub::Decrypt(c) => {
                let ct = decode("ciphertext", &c.ciphertext)?;
                let ctx = decode_opt("context", c.context.as_ref())?;
                let pt = c
                    .client()?
                    .decrypt(&c.name, &ct, &ctx)
                    .map_err(|e| format!("failed to decrypt ciphertext: {e}"))?;
                let pt = STANDARD.encode(pt.as_slice());
                if tty() && !c.json {
                    println!("\nplaintext: {pt}");
                } else {
                    println!("{}", json!({"plaintext": pt}));
                }
                Ok(())
            }
            KeySub::Hmac(c) => {
                let mac = c
                    .client()?
                    .hmac(&c.name, c.message.as_bytes())
                    .map_err(|e| format!("failed to compute HMAC: {e}"))?;
                let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
                if tty() && !c.json {
                    println!("\nhmac: {hex}");
                } else {
                    println!("{}", json!({"hmac": hex}));
                }
                Ok(())
            }
        }
    }
}

/// Inspect policies.
#[derive(FromArgs)]
#[argh(subcommand, name = "policy")]
pub struct PolicyCmd {
    #[argh(subcommand)]
    cmd: PolicySub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum PolicySub {
    Info(PolicyInfo),
    Ls(PolicyLs),
    Show(PolicyShow),
}

conn_fields! {
    /// Show a policy's metadata.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "info")]
    struct PolicyInfo {
        /// policy name
        #[argh(positional)]
        name: String,
    }
}

conn_fields! {
    /// List policies.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "ls")]
    struct PolicyLs {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// prefix or pattern
        #[argh(positional, default = "String::new()")]
        pattern: String,
    }
}

conn_fields! {
    /// Show a policy's allow and deny patterns.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "show")]
    struct PolicyShow {
        /// policy name
        #[argh(positional)]
        name: String,
    }
}

impl PolicyCmd {
    pub fn run(self) -> Result<(), String> {
        match self.cmd {
            PolicySub::Info(c) => {
                let v = c
                    .client()?
                    .describe_policy(&c.name)
                    .map_err(|e| format!("failed to describe policy \"{}\": {e}", c.name))?;
                print_json(&v);
            }
            PolicySub::Ls(c) => {
                let names = c
                    .client()?
                    .list_policies(&c.pattern)
                    .map_err(|e| format!("failed to list policies: {e}"))?;
                print_list("Policy", &names, c.json);
            }
            PolicySub::Show(c) => {
                let v = c
                    .client()?
                    .read_policy(&c.name)
                    .map_err(|e| format!("failed to show policy \"{}\": {e}", c.name))?;
                print_json(&v);
            }
        }
        Ok(())
    }
}

conn_fields! {
    /// List keys, policies (-p) or identities (-i).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "ls")]
    pub struct LsCmd {
        /// list identities
        #[argh(switch, short = 'i')]
        identity: bool,
        /// list policies
        #[argh(switch, short = 'p')]
        policy: bool,
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// prefix
        #[argh(positional, default = "String::new()")]
        prefix: String,
    }
}

impl LsCmd {
    pub fn run(self) -> Result<(), String> {
        if self.identity && self.policy {
            return Err(
                "'-p / --policy' and '-i / --identity' must not be used at the same time".into()
            );
        }
        let c = self.client()?;
        let (header, names) = if self.identity {
            (
                "Identity",
                c.list_identities(&self.prefix)
                    .map_err(|e| format!("failed to list identities: {e}"))?,
            )
        } else if self.policy {
            (
                "Policy",
                c.list_policies(&self.prefix)
                    .map_err(|e| format!("failed to list policies: {e}"))?,
            )
        } else {
            ("Key", c.list_keys(&self.prefix).map_err(|e| format!("failed to list keys: {e}"))?)
        };
        print_list(header, &names, self.json);
        Ok(())
    }
}

conn_fields! {
    /// Show the server's status.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "status")]
    pub struct StatusCmd {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// print only whether the server is reachable
        #[argh(switch)]
        short: bool,
    }
}

impl StatusCmd {
    pub fn run(self) -> Result<(), String> {
        let v = self.client()?.status().map_err(|e| format!("failed to fetch status: {e}"))?;
        if self.json || !tty() {
            println!("{v}");
        } else if self.short {
            println!("online");
        } else {
            println!("{:<18}{}", bold("Version"), v["version"].as_str().unwrap_or(""));
            println!("{:<18}{}s", bold("Uptime"), v["uptime"]);
            println!(
                "{:<18}{}/{}",
                bold("OS/Arch"),
                v["os"].as_str().unwrap_or(""),
                v["arch"].as_str().unwrap_or("")
            );
            println!("{:<18}{} bytes", bold("Memory (heap)"), v["mem_heap_used"]);
            match v.get("keystore_latency") {
                Some(l) => println!("{:<18}{l} ms", bold("Key store")),
                None => println!("{:<18}unreachable", bold("Key store")),
            }
        }
        Ok(())
    }
}

conn_fields! {
    /// Print the server's Prometheus metrics.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "metric")]
    pub struct MetricCmd {}
}

impl MetricCmd {
    pub fn run(self) -> Result<(), String> {
        let text = self.client()?.metrics().map_err(|e| format!("failed to fetch metrics: {e}"))?;
        print!("{text}");
        Ok(())
    }
}

/// Print identities: of a certificate file or an API key, a new API key, or
/// who the server says you are.
pub fn identity_of(arg: &str) -> Result<String, String> {
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
pub fn identity_new(
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

/// `kes identity info [<identity>]`.
pub fn identity_info(
    server: Option<&str>,
    insecure: bool,
    identity: Option<&str>,
) -> Result<(), String> {
    let c = connect(server, insecure)?;
    let v = match identity {
        Some(id) => c.describe_identity(id),
        None => c.describe_self(),
    }
    .map_err(|e| format!("failed to describe identity: {e}"))?;
    print_json(&v);
    Ok(())
}

/// `kes identity ls [<prefix>]`.
pub fn identity_ls(
    server: Option<&str>,
    insecure: bool,
    prefix: &str,
    as_json: bool,
) -> Result<(), String> {
    let ids = connect(server, insecure)?
        .list_identities(prefix)
        .map_err(|e| format!("failed to list identities: {e}"))?;
    print_list("Identity", &ids, as_json);
    Ok(())
}

conn_fields! {
    /// Follow the audit log (default) or the error log.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "log")]
    pub struct LogCmd {
        /// follow the audit log (default)
        #[argh(switch)]
        audit: bool,
        /// follow the error log
        #[argh(switch)]
        error: bool,
        /// print each event as a JSON line
        #[argh(switch)]
        json: bool,
    }
}

impl LogCmd {
    pub fn run(self) -> Result<(), String> {
        if self.audit && self.error {
            return Err("cannot display audit and error logs at the same time".into());
        }
        let audit = !self.error;
        let which = if audit { "audit" } else { "error" };
        let lines = self
            .client()?
            .log(audit)
            .map_err(|e| format!("failed to connect to {which} log: {e}"))?;
        if audit && !self.json {
            println!(
                "{}",
                bold(&format!(
                    "{:<10} {:<6} {:<20} {:<16} {:<32} {}",
                    "Time", "Status", "Identity", "IP", "API", "Latency"
                ))
            );
        }
        let mut out = std::io::stdout();
        for line in lines {
            let line = line.map_err(|e| format!("{which} log: {e}"))?;
            if self.json {
                println!("{line}");
            } else {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if audit {
                    let time = v["time"].as_str().unwrap_or("");
                    let clock = time.get(11..19).unwrap_or(time);
                    let id = v["request"]["identity"].as_str().unwrap_or("<unknown>");
                    let latency = v["response"]["time"].as_u64().unwrap_or(0);
                    println!(
                        "{:<10} {:<6} {:<20} {:<16} {:<32} {}",
                        clock,
                        v["response"]["code"],
                        &id[..id.len().min(20)],
                        v["request"]["ip"].as_str().unwrap_or("<unknown>"),
                        v["request"]["path"].as_str().unwrap_or(""),
                        human_duration(latency)
                    );
                } else {
                    println!("{}", v["message"].as_str().unwrap_or(&line));
                }
            }
            let _ = std::io::Write::flush(&mut out);
        }
        Ok(())
    }
}

fn human_duration(nanos: u64) -> String {
    match nanos {
        n if n >= 1_000_000_000 => format!("{:.1}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{}µs", n / 1000),
    }
}

/// Copy keys between the key stores of two server config files.
#[derive(FromArgs)]
#[argh(subcommand, name = "migrate")]
pub struct MigrateCmd {
    /// config file of the source key store
    #[argh(option)]
    from: Option<String>,
    /// config file of the target key store
    #[argh(option)]
    to: Option<String>,
    /// replace keys that exist at the target
    #[argh(switch, short = 'f')]
    force: bool,
    /// skip keys that exist at the target
    #[argh(switch)]
    merge: bool,
    /// no progress output
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// key name pattern (glob, default *)
    #[argh(positional, default = "String::from(\"*\")")]
    pattern: String,
}

impl MigrateCmd {
    pub fn run(self) -> Result<(), String> {
        use kes_adapters::store::{FsStore, KeyStore};
        use kes_core::config::KeystoreConfig;
        use kes_core::{Command, StoreError, StoreReply};
        if self.force && self.merge {
            return Err("mutually exclusive options '--force' and '--merge' specified".into());
        }
        let from = self
            .from
            .ok_or("no migration source specified. Use '--from' to specify a config file")?;
        let to =
            self.to.ok_or("no migration target specified. Use '--to' to specify a config file")?;
        let store = |file: &str| -> Result<FsStore, String> {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))?;
            let config = kes_core::Config::parse(&text, &|n| std::env::var(n).ok())
                .map_err(|e| format!("{file}: {e}"))?;
            match config.keystore {
                KeystoreConfig::Fs { path } => FsStore::open(&path)
                    .map_err(|e| format!("{file}: keystore.fs.path '{path}': {e}")),
                KeystoreConfig::Memory => {
                    Err(format!("{file}: no persistent key store configured (nothing to migrate)"))
                }
            }
        };
        let (src, dst) = (store(&from)?, store(&to)?);
        let names =
            match src.execute(Command::List).map_err(|e| format!("listing '{from}': {e}"))? {
                StoreReply::Names(mut n) => {
                    n.retain(|n| {
                        kes_core::name::valid_name(n)
                            && kes_core::policy::glob_match(&self.pattern, n)
                    });
                    n.sort();
                    n
                }
                _ => Vec::new(),
            };
        let total = names.len();
        let progress = !self.quiet && std::io::stderr().is_terminal();
        if !self.quiet {
            eprintln!("Starting key migration: {total} keys");
        }
        let (mut migrated, mut skipped) = (0usize, 0usize);
        for (i, n) in names.iter().enumerate() {
            let name = kes_core::KeyName::parse(n).map_err(|e| e.to_string())?;
            let value = match src.execute(Command::Get { name: name.clone() }) {
                Ok(StoreReply::Value(v)) => v,
                Ok(_) | Err(StoreError::NotFound) => continue, // deleted meanwhile
                Err(e) => return Err(format!("failed to read key \"{n}\": {e}")),
            };
            // Key files are copied verbatim, whatever KES generation wrote them.
            match dst.execute(Command::Create { name: name.clone(), value: value.clone() }) {
                Ok(_) => migrated += 1,
                Err(StoreError::Exists) if self.merge => skipped += 1,
                Err(StoreError::Exists) if self.force => {
                    dst.execute(Command::Delete { name: name.clone() }).map_err(|e| format!("failed to replace key \"{n}\": {e}"))?;
                    dst.execute(Command::Create { name, value }).map_err(|e| format!("failed to migrate key \"{n}\": {e}"))?;
                    migrated += 1;
                }
                Err(StoreError::Exists) => {
                    return Err(format!("failed to migrate key \"{n}\": key already exists at the target (use --merge or --force)"))
                }
                Err(e) => return Err(format!("failed to migrate key \"{n}\": {e}")),
            }
            if progress {
                let done = (i + 1) * 30 / total.max(1);
                eprint!("\r[{}{}] {}/{total}", "#".repeat(done), " ".repeat(30 - done), i + 1);
            }
        }
        if progress {
            eprintln!();
        }
        if !self.quiet {
            if migrated == 0 && skipped == 0 {
                eprintln!("Migration succeeded! No keys migrated.");
            } else {
                eprintln!(
                    "Migrated {migrated} keys successfully! ({skipped} already present, skipped)"
                );
            }
        }
        Ok(())
    }
}
