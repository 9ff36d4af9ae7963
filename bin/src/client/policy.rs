//! `kes policy ...`: info, ls, show.

use argh::FromArgs;

use super::output::{print_fields, print_json, print_list, print_patterns, tty};

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
        /// print JSON
        #[argh(switch)]
        json: bool,
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
        /// print JSON
        #[argh(switch)]
        json: bool,
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
                if c.json || !tty() {
                    print_json(&v);
                } else {
                    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
                    let (date, by) = (text("created_at"), text("created_by"));
                    print_fields(&[("Name", &c.name), ("Date", &date), ("Created by", &by)], false);
                }
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
                if c.json || !tty() {
                    print_json(&v);
                } else {
                    print_patterns(&v);
                    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
                    let (date, by) = (text("created_at"), text("created_by"));
                    print_fields(&[("Created at", &date), ("Created by", &by)], false);
                }
            }
        }
        Ok(())
    }
}
