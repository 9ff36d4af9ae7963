//! `kes`: the key server and its command-line client.

#![deny(unsafe_code)]

mod alloc;
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
}

/// Print the identity of a certificate: the hex SHA-256 of its public key.
#[derive(FromArgs)]
#[argh(subcommand, name = "of")]
struct IdentityOf {
    /// PEM certificate file
    #[argh(positional)]
    cert: String,
}

fn main() {
    let kes: Kes = argh::from_env();
    let result = match kes.cmd {
        Cmd::Server(cmd) => server::run(cmd),
        Cmd::Identity(IdentityCmd { cmd: IdentitySub::Of(of) }) => identity_of(&of.cert),
    };
    if let Err(e) = result {
        eprintln!("kes: {e}");
        std::process::exit(1);
    }
}

fn identity_of(path: &str) -> Result<(), String> {
    let certs = kes_adapters::tls::load_certs(std::path::Path::new(path))?;
    let id = kes_core::Identity::from_certificate(&certs[0]).map_err(|e| format!("{path}: {e}"))?;
    println!("{id}");
    Ok(())
}
