//! `kes migrate`: copy key files between the stores of two config files,
//! or seal (unseal) the store of one config in place with its `hsm:`.

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
    /// seal every key of the --from store in place with its hsm: section
    #[argh(switch)]
    to_hsm: bool,
    /// unseal every key of the --from store in place (leaving the HSM)
    #[argh(switch)]
    from_hsm: bool,
    /// key name pattern (glob, default *)
    #[argh(positional, default = "String::from(\"*\")")]
    pattern: String,
}

/// A config file, parsed, with a store that persists.
fn load(file: &str) -> Result<kes_core::Config, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))?;
    let config = kes_core::Config::parse(&text, &|n| std::env::var(n).ok())
        .map_err(|e| format!("{file}: {e}"))?;
    if config.keystore == kes_core::config::KeystoreConfig::Memory {
        return Err(format!("{file}: no persistent key store configured (nothing to migrate)"));
    }
    Ok(config)
}

impl MigrateCmd {
    /// `--to-hsm` / `--from-hsm`: every key of one store, in place.
    fn reseal(self) -> Result<(), String> {
        use kes_adapters::store::hsm::{reseal, Hsm, Resealed};
        use kes_core::{Command, KeyName, StoreReply};
        if self.to_hsm && self.from_hsm {
            return Err("mutually exclusive options '--to-hsm' and '--from-hsm' specified".into());
        }
        if self.to.is_some() {
            return Err("'--to-hsm' and '--from-hsm' work in place: give only '--from'".into());
        }
        let file = self.from.ok_or("no config file specified. Use '--from' to name one")?;
        let config = load(&file)?;
        let hsm_cfg = config.hsm.as_ref().ok_or_else(|| format!("{file}: no hsm: section"))?;
        let hsm = Hsm::open(hsm_cfg).map_err(|e| format!("{file}: {e}"))?;
        let raw = kes_adapters::store::open(&config.keystore)
            .map(|o| o.store)
            .map_err(|e| format!("{file}: {e}"))?;
        let mut names: Vec<KeyName> = match raw.execute(Command::List) {
            Ok(StoreReply::Names(n)) => n
                .iter()
                .filter_map(|n| KeyName::parse(n).ok().or_else(|| KeyName::of_staging(n)))
                .filter(|n| kes_core::policy::glob_match(&self.pattern, n.as_str()))
                .collect(),
            Ok(_) => Vec::new(),
            Err(e) => return Err(format!("listing '{file}': {e}")),
        };
        names.sort();
        names.dedup();
        let (mut changed, mut unchanged, mut busy) = (0, 0, Vec::new());
        for name in &names {
            match reseal(raw.as_ref(), &hsm, name, self.to_hsm)? {
                Resealed::Changed => changed += 1,
                Resealed::Unchanged => unchanged += 1,
                Resealed::Busy => busy.push(name.to_string()),
                Resealed::Gone => {}
            }
        }
        let verb = if self.to_hsm { "Sealed" } else { "Unsealed" };
        if !self.quiet {
            eprintln!("{verb} {changed} keys ({unchanged} already were)");
        }
        if !busy.is_empty() {
            return Err(format!(
                "{} keys were being changed by a server, run again: {}",
                busy.len(),
                busy.join(", ")
            ));
        }
        Ok(())
    }

    pub fn run(self) -> Result<(), String> {
        use kes_adapters::store::KeyStore;
        use kes_core::{Command, StoreError, StoreReply};
        if self.force && self.merge {
            return Err("mutually exclusive options '--force' and '--merge' specified".into());
        }
        if self.to_hsm || self.from_hsm {
            return self.reseal();
        }
        let from = self
            .from
            .ok_or("no migration source specified. Use '--from' to specify a config file")?;
        let to =
            self.to.ok_or("no migration target specified. Use '--to' to specify a config file")?;
        let store = |file: &str| -> Result<std::sync::Arc<dyn KeyStore>, String> {
            let config = load(file)?;
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
