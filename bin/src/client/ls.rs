//! `kes ls`: keys, policies (-p) or identities (-i).

use argh::FromArgs;

use super::output::print_list;

/// List keys, policies (-p) or identities (-i).
#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
pub struct LsCmd {
    /// server endpoint(s), comma-separated (default: $KES_SERVER)
    #[argh(option, short = 's')]
    server: Option<String>,
    /// API key (default: $KES_API_KEY)
    #[argh(option, short = 'a')]
    api_key: Option<String>,
    /// do not verify the server's certificate
    #[argh(switch, short = 'k')]
    insecure: bool,
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

impl LsCmd {
    pub fn run(self) -> Result<(), String> {
        if self.identity && self.policy {
            return Err(
                "'-p / --policy' and '-i / --identity' must not be used at the same time".into()
            );
        }
        let c = super::connect(self.server.as_deref(), self.api_key.as_deref(), self.insecure)?;
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
