//! `kes migrate`: copy key files between the stores of two config files.

use std::io::IsTerminal;

use argh::FromArgs;

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
        use kes_adapters::store::KeyStore;
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
        let store = |file: &str| -> Result<std::sync::Arc<dyn KeyStore>, String> {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))?;
            let config = kes_core::Config::parse(&text, &|n| std::env::var(n).ok())
                .map_err(|e| format!("{file}: {e}"))?;
            if config.keystore == KeystoreConfig::Memory {
                return Err(format!(
                    "{file}: no persistent key store configured (nothing to migrate)"
                ));
            }
            kes_adapters::store::open(&config.keystore)
                .map(|o| o.store)
                .map_err(|e| format!("{file}: {e}"))
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
