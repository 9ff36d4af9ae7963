//! `kes`: the key server and its command-line client.

#![deny(unsafe_code)]

mod alloc;
mod client;
mod server;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

use argh::FromArgs;

/// KES-compatible key encryption service.
#[derive(FromArgs)]
struct Kes {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Server(server::ServerCmd),
    Identity(IdentityCmd),
    Key(client::KeyCmd),
    Policy(client::PolicyCmd),
    Ls(client::LsCmd),
    Status(client::StatusCmd),
    Metric(client::MetricCmd),
    Log(client::LogCmd),
    Migrate(client::MigrateCmd),
}

/// Identity helpers.
#[derive(FromArgs)]
#[argh(subcommand, name = "identity")]
struct IdentityCmd {
    #[argh(subcommand)]
    cmd: IdentitySub,
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

/// Describe an identity (default: your own, as the server sees it).
#[derive(FromArgs)]
#[argh(subcommand, name = "info")]
struct IdentityInfo {
    /// server endpoint(s) (default: $KES_SERVER)
    #[argh(option, short = 's')]
    server: Option<String>,
    /// do not verify the server's certificate
    #[argh(switch, short = 'k')]
    insecure: bool,
    /// identity to describe
    #[argh(positional)]
    identity: Option<String>,
}

/// List identities.
#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
struct IdentityLs {
    /// server endpoint(s) (default: $KES_SERVER)
    #[argh(option, short = 's')]
    server: Option<String>,
    /// do not verify the server's certificate
    #[argh(switch, short = 'k')]
    insecure: bool,
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// prefix
    #[argh(positional, default = "String::new()")]
    prefix: String,
}

fn main() {
    let kes: Kes = argh::from_env();
    let result = match kes.cmd {
        Cmd::Server(cmd) => server::run(cmd),
        Cmd::Identity(IdentityCmd { cmd }) => match cmd {
            IdentitySub::Of(of) => identity_of(&of.args),
            IdentitySub::New(n) => new_identity(n),
            IdentitySub::Info(i) => {
                client::identity_info(i.server.as_deref(), i.insecure, i.identity.as_deref())
            }
            IdentitySub::Ls(l) => {
                client::identity_ls(l.server.as_deref(), l.insecure, &l.prefix, l.json)
            }
        },
        Cmd::Key(k) => k.run(),
        Cmd::Policy(p) => p.run(),
        Cmd::Ls(l) => l.run(),
        Cmd::Status(s) => s.run(),
        Cmd::Metric(m) => m.run(),
        Cmd::Log(l) => l.run(),
        Cmd::Migrate(m) => m.run(),
    };
    if let Err(e) = result {
        eprintln!("Error: {e}");
        std::process::exit(1);
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
    client::identity_new(n.key.as_deref(), n.cert.as_deref(), n.force, &opts)
}

fn identity_of(args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("no certificate or API key specified. See 'kes identity of --help'".into());
    }
    for a in args {
        let id = client::identity_of(a)?;
        if args.len() == 1 {
            println!("{id}");
        } else {
            println!("{a}: {id}");
        }
    }
    Ok(())
}
