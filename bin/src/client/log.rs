//! `kes log`: follow the audit or error log.

use argh::FromArgs;
use serde_json::Value;

use super::output::bold;

conn_fields! {
    /// Follow the audit log (default) or the error log.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "log")]
    pub struct LogCmd {
        /// follow the audit log (default)
        #[argh(switch)]
        audit: bool,
        /// follow the error log
        #[argh(switch)]
        error: bool,
        /// print each event as a JSON line
        #[argh(switch)]
        json: bool,
    }
}

impl LogCmd {
    pub fn run(self) -> Result<(), String> {
        if self.audit && self.error {
            return Err("cannot display audit and error logs at the same time".into());
        }
        let audit = !self.error;
        let which = if audit { "audit" } else { "error" };
        let lines = self
            .client()?
            .log(audit)
            .map_err(|e| format!("failed to connect to {which} log: {e}"))?;
        if audit && !self.json {
            println!(
                "{}",
                bold(&format!(
                    "{:<10} {:<6} {:<20} {:<16} {:<32} {}",
                    "Time", "Status", "Identity", "IP", "API", "Latency"
                ))
            );
        }
        let mut out = std::io::stdout();
        for line in lines {
            let line = line.map_err(|e| format!("{which} log: {e}"))?;
            if self.json {
                println!("{line}");
            } else {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if audit {
                    let time = v["time"].as_str().unwrap_or("");
                    let clock = time.get(11..19).unwrap_or(time);
                    let id = v["request"]["identity"].as_str().unwrap_or("<unknown>");
                    let latency = v["response"]["time"].as_u64().unwrap_or(0);
                    println!(
                        "{:<10} {:<6} {:<20} {:<16} {:<32} {}",
                        clock,
                        v["response"]["code"],
                        &id[..id.len().min(20)],
                        v["request"]["ip"].as_str().unwrap_or("<unknown>"),
                        v["request"]["path"].as_str().unwrap_or(""),
                        human_duration(latency)
                    );
                } else {
                    println!("{}", v["message"].as_str().unwrap_or(&line));
                }
            }
            let _ = std::io::Write::flush(&mut out);
        }
        Ok(())
    }
}

fn human_duration(nanos: u64) -> String {
    match nanos {
        n if n >= 1_000_000_000 => format!("{:.1}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{}µs", n / 1000),
    }
}
