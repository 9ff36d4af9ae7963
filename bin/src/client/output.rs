//! How results are printed: readable text on a terminal, plain lines or
//! JSON when piped, so scripts never parse decoration.

use std::io::IsTerminal;

use serde_json::Value;

pub fn tty() -> bool {
    std::io::stdout().is_terminal()
}

pub fn bold(s: &str) -> String {
    paint(s, tty() && std::env::var_os("NO_COLOR").is_none())
}

fn paint(s: &str, colour: bool) -> String {
    if colour {
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
    for line in field_lines(fields, tty() && std::env::var_os("NO_COLOR").is_none()) {
        println!("{line}");
    }
}

/// `name:` labels in bold, values aligned. The padding goes outside the
/// colour codes, so they never count as width (`Namemy-key` was the bug).
fn field_lines(fields: &[(&str, &str)], colour: bool) -> Vec<String> {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    fields
        .iter()
        .map(|(k, v)| {
            let label = format!("{k}:");
            format!("{}{} {v}", paint(&label, colour), " ".repeat(width - label.len()))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn colour_codes_do_not_count_as_width() {
        let fields = [("Name", "my-key"), ("Memory (heap)", "657967 bytes")];
        let plain = field_lines(&fields, false);
        let coloured = field_lines(&fields, true);
        assert_ne!(plain, coloured, "the labels are bold");
        assert_eq!(coloured.iter().map(|l| visible(l)).collect::<Vec<_>>(), plain);
        assert_eq!(plain, ["Name:           my-key", "Memory (heap):  657967 bytes"]);
    }
}
