//! Settings errors that say where the bad value is (file:line:column or variable) and what to do.

use std::fmt;

/// A setting that could not be used. Printed as `where: key: problem (did you mean …?)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    /// `path:line:column`, an environment variable name or a command-line flag.
    pub location: String,
    /// Dotted key (`upstream.endpoint`), or empty when the problem is the file as a whole.
    pub key: String,
    pub message: String,
    /// The closest valid key, when the key itself is unknown.
    pub suggestion: Option<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key written at `offset` in a TOML document: the `[section]` above plus the key
/// on that line. A heuristic for messages only; it never decides what a value means.
pub fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match section {
        Some(s) if !key.is_empty() => format!("{s}.{key}"),
        Some(s) => s,
        None => key.to_string(),
    }
}

/// Picks the candidate closest to `wrong` (edit distance at most a third of its length, min 2).
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (wrong.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(wrong, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Extracts the candidates from serde's "unknown field `x`, expected one of `a`, `b`" message.
pub fn unknown_field_suggestion(message: &str) -> Option<String> {
    let wrong = message.split('`').nth(1)?;
    let expected = message.split("expected").nth(1)?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    closest(wrong, candidates)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\n[upstream]\nendpont = 2\n";
        let off = text.find("endpont").unwrap();
        assert_eq!(line_col(text, off), (3, 1));
        assert_eq!(key_at(text, off), "upstream.endpont");
    }

    #[test]
    fn suggests_the_closest_known_key() {
        let msg = "unknown field `endpont`, expected one of `enabled`, `endpoint`, `protocol`";
        assert_eq!(unknown_field_suggestion(msg).as_deref(), Some("endpoint"));
        assert_eq!(closest("zzzzzz", ["endpoint"]), None);
    }
}
