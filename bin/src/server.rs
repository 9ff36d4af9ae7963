//! `kes server`: load the config, merge flags, start serving.

/// A line on stderr that never panics: `eprintln!` does when stderr is a
/// pipe whose reader is gone, and a log write must not stop the server.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argh::FromArgs;
use kes_adapters::store::MemStore;
use kes_adapters::tls::{self, ClientAuth};
use kes_adapters::{start, ServerOptions};
use kes_core::config::AdminSetting;
use kes_core::Config;

/// Start a KES server.
#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
pub struct ServerCmd {
    /// path to the YAML config file
    #[argh(option)]
    config: Option<String>,
    /// listen address ip:port (default 0.0.0.0:7373; overrides `address`)
    #[argh(option)]
    addr: Option<String>,
    /// TLS certificate file (overrides tls.cert)
    #[argh(option)]
    cert: Option<String>,
    /// TLS private key file (overrides tls.key)
    #[argh(option)]
    key: Option<String>,
    /// admin ("root") identity (overrides admin.identity / root)
    #[argh(option)]
    root: Option<String>,
    /// verify client certificates: on or off (overrides tls.auth; default off)
    #[argh(option)]
    auth: Option<String>,
    /// development mode: 127.0.0.1:7373, in-memory keys, fresh certificates
    #[argh(switch)]
    dev: bool,
}

pub fn run(cmd: ServerCmd) -> Result<(), String> {
    crate::alloc::spawn_trimmer();
    if cmd.dev {
        if cmd.config.is_some() {
            return Err("'--config' is not supported in development mode".into());
        }
        return run_dev(cmd.addr.as_deref().unwrap_or("127.0.0.1:7373"));
    }

    let loaded = load(&cmd)?;
    for w in &loaded.config.warnings {
        say!("kes: warning: {w}");
    }
    let opened = kes_adapters::store::open(&loaded.config.keystore)?;
    let opened = kes_adapters::store::with_hsm(opened, loaded.config.hsm.as_ref())?;
    let (store, store_label) = (opened.store, opened.label);
    for line in opened.notes {
        say!("kes: {line}");
    }
    let admin = admin_label(&loaded.config);
    let keystore = loaded.config.keystore.clone();
    let hsm_of = |c: &kes_core::Config| {
        c.hsm.as_ref().map(|h| (h.module.clone(), h.token.clone(), h.key.clone()))
    };
    let hsm = hsm_of(&loaded.config);
    let auth = ClientAuth {
        verify: loaded.config.tls.auth.unwrap_or(false),
        required: !loaded.config.any_skip_auth(),
    };
    let auth_text = auth_label(auth, loaded.config.tls.ca.as_deref());
    let running = start(ServerOptions {
        config: loaded.config,
        addr: loaded.addr,
        tls: loaded.tls,
        store,
        threads: threads(),
    })?;
    say!("kes: listening on https://{}", running.addr());
    say!("kes: admin identity: {admin}");
    say!("kes: key store: {store_label}");
    say!("kes: client certificates: {auth_text}");
    serve_until_signal(running, |running| {
        let loaded = load(&cmd)?;
        if loaded.config.keystore != keystore || hsm_of(&loaded.config) != hsm {
            say!("kes: warning: key store and hsm changes take effect after a restart");
        }
        for w in &loaded.config.warnings {
            say!("kes: warning: {w}");
        }
        running.reload(loaded.config, Some(loaded.tls))
    })
}

/// Runs until SIGINT/SIGTERM (graceful stop, exit 0); SIGHUP calls `reload`,
/// and a failed reload keeps the running configuration.
fn serve_until_signal(
    running: kes_adapters::RunningServer,
    reload: impl Fn(&kes_adapters::RunningServer) -> Result<(), String>,
) -> Result<(), String> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals = Signals::new([Signal::Hup, Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    loop {
        let Some(Ok(sig)) = smol::block_on(signals.next()) else { continue };
        match sig {
            Signal::Hup => match reload(&running) {
                Ok(()) => say!("kes: configuration reloaded"),
                Err(e) => say!("kes: reload failed, keeping the current configuration: {e}"),
            },
            _ => {
                say!("kes: shutting down: finishing in-flight requests");
                if !running.shutdown(SHUTDOWN_GRACE) {
                    say!("kes: some connections were still busy after {SHUTDOWN_GRACE:?}");
                }
                return Ok(());
            }
        }
    }
}

/// How long a graceful shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A config file read, merged with flags and checked, plus its TLS setup.
struct Loaded {
    config: Config,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
}

fn load(cmd: &ServerCmd) -> Result<Loaded, String> {
    let mut config = match &cmd.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file '{path}': {e}"))?;
            Config::parse(&text, &|name| std::env::var(name).ok())
                .map_err(|e| format!("{path}: {e}"))?
        }
        None => Config::empty(),
    };
    if let Some(root) = &cmd.root {
        config.admin = AdminSetting::from_text(root);
    }
    if let Some(c) = &cmd.cert {
        config.tls.cert = Some(c.clone());
    }
    if let Some(k) = &cmd.key {
        config.tls.key = Some(k.clone());
    }
    if let Some(a) = &cmd.auth {
        config.tls.auth = Some(match a.to_ascii_lowercase().as_str() {
            "on" => true,
            "off" => false,
            _ => return Err(format!("--auth: invalid value '{a}': use on or off")),
        });
    }
    if cmd.config.is_none() {
        return Err("no config file given: use 'kes server --config FILE', or 'kes server --dev' for a development server".into());
    }
    if config.admin == AdminSetting::Unset {
        return Err(
            "no admin identity specified: set admin.identity in the config or use --root".into()
        );
    }
    let addr_text = cmd
        .addr
        .clone()
        .or_else(|| config.address.clone())
        .unwrap_or_else(|| "0.0.0.0:7373".into());
    let addr = parse_addr(&addr_text)?;
    let cert = config
        .tls
        .cert
        .clone()
        .ok_or("no TLS certificate specified: set tls.cert or use --cert")?;
    let key =
        config.tls.key.clone().ok_or("no TLS private key specified: set tls.key or use --key")?;
    let auth =
        ClientAuth { verify: config.tls.auth.unwrap_or(false), required: !config.any_skip_auth() };
    let tls = tls::server_config(
        Path::new(&cert),
        Path::new(&key),
        config.tls.password.as_deref(),
        auth,
        config.tls.ca.as_deref().map(Path::new),
    )?;
    Ok(Loaded { config, addr, tls })
}

fn admin_label(config: &Config) -> String {
    match &config.admin {
        AdminSetting::Identity(id) => id.to_string(),
        AdminSetting::Disabled(_) | AdminSetting::Unset => "disabled".into(),
    }
}

/// Executor threads: `KES_THREADS`, else one. One thread owns the core
/// anyway, and keeping connections on the same thread avoids a cross-thread
/// wake-up per request: on the 2-core benchmark machine one thread served
/// more requests per second at ~1/3 less CPU per request than two.
fn threads() -> usize {
    std::env::var("KES_THREADS").ok().and_then(|t| t.parse().ok()).filter(|t| *t > 0).unwrap_or(1)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    full.parse().map_err(|_| format!("invalid listen address '{s}': use ip:port"))
}

/// `--dev`: a throwaway server with fresh certificates and a fresh API key
/// as admin (as KES v0.24 does), everything written to a private temp
/// directory that is removed again when the server stops.
fn run_dev(addr: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    let dir = DevDir::create()?;
    let (server_cert, server_key) = dev_server_certificate(addr)?;
    let api_key = kes_client::ApiKey::generate();
    let admin = api_key.identity().map_err(|e| e.to_string())?;
    let (admin_cert, _) = api_key.certificate().map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let p = dir.0.join(name);
        write_private(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    let server_cert_path = write("server.cert", &server_cert.pem())?;
    let server_key_path = write("server.key", &server_key.serialize_pem())?;
    let admin_cert_path = write("admin.cert", &pem("CERTIFICATE", admin_cert.as_ref()))?;
    let admin_key_path =
        write("admin.key", &zeroize::Zeroizing::new(pem("PRIVATE KEY", &api_key.pkcs8())))?;
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin);
    config.log.audit = true;
    // A development server takes whatever a local load test opens.
    config.tls.handshake_rate = 0;
    let auth = ClientAuth { verify: false, required: true };
    let tls_config = tls::server_config(&server_cert_path, &server_key_path, None, auth, None)?;
    let running = start(ServerOptions {
        config,
        addr,
        tls: tls_config,
        store: Arc::new(MemStore::default()),
        threads: threads(),
    })?;
    let host =
        if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let url = format!("https://{host}:{}", running.addr().port());
    say!("kes: development server listening on {url}");
    say!("kes: keys live in memory and are lost on exit");
    say!("kes: client certificates: {}", auth_label(auth, None));
    say!("kes: admin identity: {admin}");
    say!("kes: admin API key:  {}", api_key.secret_text().as_str());
    say!();
    say!("Paste into a client shell:");
    say!("  export KES_SERVER={url}");
    say!("  export KES_CAPATH={}", server_cert_path.display());
    say!("  export KES_API_KEY={}", api_key.secret_text().as_str());
    say!();
    say!("Clients without API keys use the same identity's certificate instead of KES_API_KEY:");
    say!("  export KES_CLIENT_CERT={}", admin_cert_path.display());
    say!("  export KES_CLIENT_KEY={}", admin_key_path.display());
    say!();
    say!("Or try it with curl:");
    say!(
        "  curl --cacert {} --cert {} --key {} {url}/v1/status",
        server_cert_path.display(),
        admin_cert_path.display(),
        admin_key_path.display()
    );
    say!();
    say!("The certificates live in {} until the server stops.", dir.0.display());
    serve_until_signal(running, |_| Err("there is no config file to reload in --dev mode".into()))
}

/// What the banner says about client certificates.
fn auth_label(auth: ClientAuth, ca: Option<&str>) -> String {
    match (auth.required, auth.verify) {
        (true, false) => {
            "required, not chain-verified (policies pin identities by public-key hash)".into()
        }
        (false, false) => "optional (some routes skip authentication), not chain-verified".into(),
        (req, true) => format!(
            "{}, verified against {}",
            if req { "required" } else { "optional (some routes skip authentication)" },
            ca.unwrap_or("the system's CA certificates")
        ),
    }
}

/// A self-signed ECDSA P-256 server certificate for localhost and the
/// listen address.
fn dev_server_certificate(
    addr: SocketAddr,
) -> Result<(rcgen::Certificate, rcgen::KeyPair), String> {
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !addr.ip().is_unspecified() && !sans.contains(&addr.ip().to_string()) {
        sans.push(addr.ip().to_string());
    }
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert, key))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// `--dev`'s certificate directory: created fresh (mode 0700, a random
/// name, never an existing directory) and removed when dropped, which
/// happens on a clean exit and when start-up fails.
struct DevDir(PathBuf);

impl DevDir {
    fn create() -> Result<Self, String> {
        use rand_core::RngCore;
        use std::os::unix::fs::DirBuilderExt;
        let mut last = None;
        for _ in 0..8 {
            let mut random = [0u8; 12];
            rand_core::OsRng.fill_bytes(&mut random);
            let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let path = std::env::temp_dir().join(format!("kes-dev-{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(format!(
            "cannot create a private temp directory: {}",
            last.map_or_else(String::new, |e| e.to_string())
        ))
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
