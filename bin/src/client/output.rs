//! How results are printed: readable text on a terminal, plain lines or
//! JSON when piped, so scripts never parse decoration.

use std::io::IsTerminal;

use serde_json::Value;

pub fn tty() -> bool {
    std::io::stdout().is_terminal()
}

pub fn bold(s: &str) -> String {
    if tty() && std::env::var_os("NO_COLOR").is_none() {
        format!("\u{1b}[1m{s}\u{1b}[0m")
    } else {
        s.to_owned()
    }
}

pub fn print_json(v: &Value) {
    if tty() {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{v}");
    }
}

pub fn print_list(header: &str, items: &[String], as_json: bool) {
    if as_json || !tty() {
        if as_json {
            println!("{}", Value::from(items.to_vec()));
        } else {
            for i in items {
                println!("{i}");
            }
        }
        return;
    }
    if !items.is_empty() {
        println!("{}", bold(header));
        for i in items {
            println!("{i}");
        }
    }
}

/// One result with named fields: aligned `name: value` lines on a terminal,
/// one JSON object when piped or with `--json`.
pub fn print_fields(fields: &[(&str, &str)], as_json: bool) {
    if as_json || !tty() {
        let obj: serde_json::Map<String, Value> =
            fields.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        println!("{}", Value::Object(obj));
        return;
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    for (k, v) in fields {
        // Pad outside the colour codes, so they do not count as width.
        let label = format!("{k}:");
        println!("{}{} {v}", bold(&label), " ".repeat(width - label.len()));
    }
}

/// A policy's `allow` and `deny` patterns as bulleted sections (v0.24
/// shapes: objects keyed by pattern; v0.19: arrays).
pub fn print_patterns(v: &Value) {
    for (key, title) in [("allow", "Allow"), ("deny", "Deny")] {
        let patterns: Vec<String> = match &v[key] {
            Value::Object(m) => m.keys().cloned().collect(),
            Value::Array(a) => a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        if !patterns.is_empty() {
            println!("{}", bold(&format!("{title}:")));
            for p in patterns {
                println!("  · {p}");
            }
        }
    }
}
