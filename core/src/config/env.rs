//! `${NAME}` references: whole-scalar values replaced line by line before
//! the YAML is parsed, so serde_yaml's line numbers stay right. Allow/deny
//! patterns (and `version`) are never expanded. An unset variable in an
//! `identities` list skips that entry with a warning (as the brief
//! promises); anywhere else it is an error naming the line.

use super::ConfigError;

/// Expands every `${NAME}` value of `text` through `env`.
pub(super) fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut path = KeyPath::default();
    for (i, line) in text.lines().enumerate() {
        let expanded = match path.entry(line) {
            Some(entry) => expand_line(line, &entry, i + 1, env, warnings)?,
            None => None,
        };
        out.push_str(expanded.as_deref().unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

/// One `key: value` or `- value` line of block YAML.
pub(super) struct Entry<'a> {
    /// The entry's own key; `None` for a list item.
    pub(super) key: Option<&'a str>,
    /// The key of the mapping or list the entry is in.
    parent: Option<String>,
    /// The value text, trimmed (a slice of the line).
    value: &'a str,
}

/// The mapping keys above the current line, by indentation: just enough of
/// the YAML structure to know which setting a value belongs to.
#[derive(Default)]
pub(super) struct KeyPath {
    keys: Vec<(usize, String)>,
}

impl KeyPath {
    /// The keys from the document's root to the last entry read.
    pub(super) fn path(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(_, k)| k.as_str())
    }

    /// Reads the next line; `None` for lines that hold no value.
    pub(super) fn entry<'a>(&mut self, line: &'a str) -> Option<Entry<'a>> {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut body = line.trim_start_matches(' ');
        let mut item_indent = indent;
        let is_item = body.starts_with("- ") || body == "-";
        if is_item {
            self.pop_while(|ind| ind > indent);
            body = body[1..].trim_start_matches(' ');
            item_indent = line.len() - body.len();
        }
        match split_key(body) {
            Some((key, value)) => {
                self.pop_while(|ind| ind >= item_indent);
                self.keys.push((item_indent, key.to_owned()));
                let parent = self.keys.len().checked_sub(2).map(|j| self.keys[j].1.clone());
                Some(Entry { key: Some(key), parent, value })
            }
            None if is_item => {
                let parent = self.keys.last().map(|(_, k)| k.clone());
                Some(Entry { key: None, parent, value: body })
            }
            None => None,
        }
    }

    fn pop_while(&mut self, deeper: impl Fn(usize) -> bool) {
        while self.keys.last().is_some_and(|(ind, _)| deeper(*ind)) {
            self.keys.pop();
        }
    }
}

/// The line with its `${NAME}` value replaced, or `None` to keep it.
fn expand_line(
    line: &str,
    entry: &Entry<'_>,
    lineno: usize,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(name) = env_ref(entry.value) else { return Ok(None) };
    let parent = entry.parent.as_deref();
    let own = entry.key.or(parent).unwrap_or("");
    if matches!(own, "allow" | "deny" | "paths" | "version") {
        return Ok(None);
    }
    let replacement = match env(name) {
        Some(v) => v,
        None if parent == Some("identities") || own == "identities" => {
            warnings.push(format!(
                "line {lineno}: environment variable '{name}' is not set; identity entry skipped"
            ));
            String::new()
        }
        None => {
            let message = format!("environment variable '{name}' is not set");
            return Err(ConfigError::at(lineno, message));
        }
    };
    let quoted = serde_json::to_string(&replacement).unwrap_or_else(|_| "\"\"".to_owned());
    let trailing = line.len() - line.trim_end().len();
    let value_start = line.len() - entry.value.len() - trailing;
    Ok(Some(format!("{}{quoted}", &line[..value_start])))
}

/// Splits `key: value` (value possibly empty); None if the line is no mapping entry.
fn split_key(body: &str) -> Option<(&str, &str)> {
    if body.starts_with('#') || body.is_empty() {
        return None;
    }
    let (k, v) = if let Some(rest) = body.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = rest[end + 1..].strip_prefix(':')?;
        (&rest[..end], after)
    } else {
        let idx = body.find(": ").or_else(|| body.strip_suffix(':').map(|s| s.len()))?;
        (&body[..idx], &body[idx + 1..])
    };
    Some((k.trim(), v.trim()))
}

/// `${NAME}` (optionally quoted, optionally followed by a comment) → NAME.
fn env_ref(value: &str) -> Option<&str> {
    let v = value.trim();
    let v = match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v)
        .trim();
    let name = v.strip_prefix("${")?.strip_suffix('}')?.trim();
    (!name.is_empty() && !name.contains(['{', '}', '$'])).then_some(name)
}
