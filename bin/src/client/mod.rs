//! The client commands: `kes key|policy|identity|ls|status|metric|log`.
//!
//! Connection settings come from the environment as in KES (cli.md §2):
//! `KES_SERVER` (comma-separated endpoints), `KES_CLIENT_CERT` +
//! `KES_CLIENT_KEY` or `KES_API_KEY` (MinIO's `MINIO_KES_*` names first), and
//! `KES_CLIENT_KEY_PASSWORD` for a legacy-encrypted key. `-s/--server` and
//! `-k/--insecure` override them.

//!
//! One module per command family; [`output`] is the one place that decides
//! between a table on a terminal and JSON when piped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kes_client::blocking::Client;
use kes_client::{ApiKey, ClientBuilder, Credentials};

/// The connection flags every command that talks to a server has, and the
/// client they make.
macro_rules! conn_fields {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        $vis struct $name {
            /// server endpoint(s), comma-separated (default: $KES_SERVER)
            #[argh(option)]
            server: Option<String>,
            /// do not verify the server's certificate
            #[argh(switch, short = 'k')]
            insecure: bool,
            $($body)*
        }
        impl $name {
            fn client(&self) -> Result<kes_client::blocking::Client, String> {
                $crate::client::connect(self.server.as_deref(), None, self.insecure)
            }
        }
    };
}

mod identity;
mod key;
mod log;
mod ls;
mod metric;
mod migrate;
pub mod output;
mod policy;
mod status;

pub use identity::IdentityCmd;
pub use key::KeyCmd;
pub use log::LogCmd;
pub use ls::LsCmd;
pub use metric::MetricCmd;
pub use migrate::MigrateCmd;
pub use policy::PolicyCmd;
pub use status::StatusCmd;

fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok())
}

/// A client from the environment (cli.md §2.2); `server` and `api_key`
/// override their variables (`kes ls -s/-a`, and `--server` everywhere).
pub(crate) fn connect(
    server: Option<&str>,
    api_key: Option<&str>,
    insecure: bool,
) -> Result<Client, String> {
    let servers = server
        .map(str::to_owned)
        .or_else(|| env_first(&["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"]))
        .unwrap_or_else(|| "127.0.0.1:7373".into());
    let endpoints: Vec<&str> =
        servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let api_key = api_key
        .map(str::to_owned)
        .or_else(|| env_first(&["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"]))
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

/// Runs `f` for each name in order, stopping at the first failure (as KES
/// does: earlier ones stay done).
pub(crate) fn each_name(
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
pub(crate) fn decode_opt(what: &str, s: Option<&String>) -> Result<Vec<u8>, String> {
    s.map_or(Ok(Vec::new()), |s| decode(what, s))
}

pub(crate) fn decode(what: &str, s: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(s.trim()).map_err(|e| format!("invalid {what}: {e}"))
}
