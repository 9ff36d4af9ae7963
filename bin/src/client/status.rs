//! `kes status`.

use argh::FromArgs;

use super::output::{print_fields, tty};

conn_fields! {
    /// Show the server's status.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "status")]
    pub struct StatusCmd {
        /// print JSON
        #[argh(switch)]
        json: bool,
        /// print only whether the server is reachable
        #[argh(switch, short = 's')]
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
            let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            let store = match v.get("keystore_latency") {
                Some(l) => format!("{l} ms"),
                None => "unreachable".to_owned(),
            };
            print_fields(
                &[
                    ("Version", &text("version")),
                    ("Uptime", &format!("{}s", v["uptime"])),
                    ("OS/Arch", &format!("{}/{}", text("os"), text("arch"))),
                    ("Memory (heap)", &format!("{} bytes", v["mem_heap_used"])),
                    ("Key store", &store),
                ],
                false,
            );
        }
        Ok(())
    }
}
