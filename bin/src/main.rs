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
    Identity(client::IdentityCmd),
    Key(client::KeyCmd),
    Policy(client::PolicyCmd),
    Ls(client::LsCmd),
    Status(client::StatusCmd),
    Metric(client::MetricCmd),
    Log(client::LogCmd),
    Migrate(client::MigrateCmd),
}

/// `kes -v` / `kes --version`, as KES prints it: aligned lines.
fn print_version() {
    println!("Version    {}", env!("CARGO_PKG_VERSION"));
    println!("Runtime    rust {}/{}", std::env::consts::OS, std::env::consts::ARCH);
    println!("License    {}", env!("CARGO_PKG_LICENSE"));
}

fn main() {
    if matches!(std::env::args().nth(1).as_deref(), Some("-v" | "--version")) {
        print_version();
        return;
    }
    let kes: Kes = argh::from_env();
    let result = match kes.cmd {
        Cmd::Server(cmd) => server::run(cmd),
        Cmd::Identity(i) => i.run(),
        Cmd::Key(k) => k.run(),
        Cmd::Policy(p) => p.run(),
        Cmd::Ls(l) => l.run(),
        Cmd::Status(s) => s.run(),
        Cmd::Metric(m) => m.run(),
        Cmd::Log(l) => l.run(),
        Cmd::Migrate(m) => m.run(),
    };
    if let Err(e) = result {
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("Error: {e}\n"));
        std::process::exit(1);
    }
}
