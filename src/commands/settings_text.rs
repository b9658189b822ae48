//! Edits one top-level member of a JSON object *in its text*, so that a settings file keeps
//! every byte it had apart from that member's value: key order, indentation, spacing and line
//! endings as Claude Code (or the user) wrote them. `serde_json` would re-serialize the whole
//! document (sorted keys, its own spacing), which turns a one-line change into a rewrite.
//!
//! The text must be valid JSON (checked with `serde_json` first), so the scanner only has to
//! find where members start and end, never to judge the syntax.

use serde_json::Value;

/// Why a text could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Not JSON at all; serde's message names the line and column.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an object at the top.
    #[error("expected a JSON object at the top")]
    NotObject,
}

/// One top-level member: byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: String,
    key_start: usize,
    key_end: usize,
    value_start: usize,
    value_end: usize,
}

/// The top-level object: its braces and members, in text order.
#[derive(Debug)]
struct Object {
    open: usize,
    close: usize,
    members: Vec<Member>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at `i` (a `"`).
fn string_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// End (exclusive) of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            j
        }
    }
}

fn scan(text: &str) -> Result<Object, EditError> {
    let parsed: Value = serde_json::from_str(text)?;
    if !parsed.is_object() {
        return Err(EditError::NotObject);
    }
    let b = text.as_bytes();
    let open = skip_ws(b, 0);
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    while b.get(i) == Some(&b'"') {
        let key_start = i;
        let key_end = string_end(b, i);
        let key: String = serde_json::from_str(&text[key_start..key_end])?;
        let colon = skip_ws(b, key_end);
        let value_start = skip_ws(b, colon + 1);
        let value_end = value_end(b, value_start);
        members.push(Member {
            key,
            key_start,
            key_end,
            value_start,
            value_end,
        });
        i = skip_ws(b, value_end);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        }
    }
    Ok(Object {
        open,
        close: i,
        members,
    })
}

/// How the file lays out its members, learnt from its first one.
struct Style {
    /// Text before a member's key (`"\n  "`, `"\r\n\t"`, or `""` when compact).
    lead: String,
    /// Text from a key's end to its value (`": "`, `":"`).
    colon: String,
    /// One level of indentation (`"  "`), `None` when the file is on one line.
    indent: Option<String>,
    /// The file's line ending.
    newline: &'static str,
}

fn style(text: &str, object: &Object) -> Style {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    match object.members.first() {
        Some(m) => {
            let lead = text[object.open + 1..m.key_start].to_owned();
            let indent = lead
                .rfind('\n')
                .map(|at| lead[at + 1..].to_owned())
                .filter(|s| !s.is_empty());
            Style {
                colon: text[m.key_end..m.value_start].to_owned(),
                indent: if lead.contains('\n') {
                    Some(indent.unwrap_or_default())
                } else {
                    None
                },
                lead,
                newline,
            }
        }
        // An empty object: as Claude Code writes settings (JSON.stringify(…, null, 2)).
        None => Style {
            lead: format!("{newline}  "),
            colon: ": ".into(),
            indent: Some("  ".into()),
            newline,
        },
    }
}

/// `value` as text for a top-level member in `style`: compact for a one-line file, else
/// pretty with the file's indentation, nested one level.
fn render(value: &Value, style: &Style) -> String {
    let Some(indent) = &style.indent else {
        return value.to_string();
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return value.to_string();
    }
    let pretty = String::from_utf8_lossy(&out).into_owned();
    pretty
        .split('\n')
        .enumerate()
        .map(|(n, line)| {
            if n == 0 {
                line.to_owned()
            } else {
                format!("{}{indent}{line}", style.newline)
            }
        })
        .collect()
}

/// The raw text of member `key`'s value (the last one, as JSON parsers keep), if present.
pub fn raw_value(text: &str, key: &str) -> Result<Option<String>, EditError> {
    let object = scan(text)?;
    Ok(object
        .members
        .iter()
        .rev()
        .find(|m| m.key == key)
        .map(|m| text[m.value_start..m.value_end].to_owned()))
}

/// `text` with member `key`'s value replaced by an object of `fields` (rendered in the file's
/// style), or the member appended after the last one when absent; nothing else changes. The
/// fields keep the given order (`serde_json`'s maps sort their keys; Claude Code writes
/// `statusLine` as `type`, then `command`).
pub fn set_member_fields(
    text: &str,
    key: &str,
    fields: &[(&str, Value)],
) -> Result<String, EditError> {
    let object = scan(text)?;
    let style = style(text, &object);
    let quote = |k: &str| Value::String(k.to_owned()).to_string();
    let raw = match &style.indent {
        None => {
            let colon = style.colon.trim_start();
            let parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}{colon}{v}", quote(k)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Some(indent) if !fields.is_empty() => {
            let inner = format!("{}{indent}{indent}", style.newline);
            let parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    let v = render(v, &style).replace(
                        &format!("{}{indent}", style.newline),
                        &format!("{}{indent}{indent}", style.newline),
                    );
                    format!("{inner}{}: {v}", quote(k))
                })
                .collect();
            format!("{{{}{}{indent}}}", parts.join(","), style.newline)
        }
        Some(_) => "{}".to_owned(),
    };
    set_raw(text, &object, key, &raw, &style)
}

/// [`set_member_fields`] with the value's text given verbatim (an undo puts back what was there).
pub fn set_member_raw(text: &str, key: &str, raw: &str) -> Result<String, EditError> {
    let object = scan(text)?;
    let style = style(text, &object);
    set_raw(text, &object, key, raw, &style)
}

fn set_raw(
    text: &str,
    object: &Object,
    key: &str,
    raw: &str,
    style: &Style,
) -> Result<String, EditError> {
    if let Some(m) = object.members.iter().rev().find(|m| m.key == key) {
        return Ok(format!(
            "{}{raw}{}",
            &text[..m.value_start],
            &text[m.value_end..]
        ));
    }
    let quoted = Value::String(key.to_owned()).to_string();
    Ok(match object.members.last() {
        Some(last) => format!(
            "{},{}{quoted}{}{raw}{}",
            &text[..last.value_end],
            style.lead,
            style.colon,
            &text[last.value_end..]
        ),
        None => format!(
            "{}{}{quoted}{}{raw}{}{}",
            &text[..=object.open],
            style.lead,
            style.colon,
            style.newline,
            &text[object.close..]
        ),
    })
}

/// `text` without member `key` (every copy of it) and the separator that came with it.
pub fn remove_member(text: &str, key: &str) -> Result<String, EditError> {
    let mut text = text.to_owned();
    loop {
        let object = scan(&text)?;
        let Some(at) = object.members.iter().position(|m| m.key == key) else {
            return Ok(text);
        };
        let m = &object.members[at];
        let (from, to) = if at > 0 {
            // `,<lead>"key": value` after the previous member.
            (object.members[at - 1].value_end, m.value_end)
        } else if let Some(next) = object.members.get(1) {
            // The first member: up to the next key, so that key takes its place and lead.
            (m.key_start, next.key_start)
        } else {
            // The only member: the object becomes empty.
            (object.open + 1, object.close)
        };
        text.replace_range(from..to, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What Claude Code writes: JSON.stringify(settings, null, 2) and a newline, keys in the
    /// order they were added (not sorted).
    const CLAUDE_WRITTEN: &str = "{\n  \"model\": \"opus\",\n  \"env\": {\n    \"B\": \"1\",\n    \"A\": \"2\"\n  },\n  \"statusLine\": {\n    \"type\": \"command\",\n    \"command\": \"echo old\"\n  },\n  \"permissions\": {\n    \"allow\": []\n  }\n}\n";

    #[test]
    fn replacing_a_value_changes_only_that_value() {
        let new = [
            ("type", json!("command")),
            ("command", json!("ct statusline")),
        ];
        let out = set_member_fields(CLAUDE_WRITTEN, "statusLine", &new).unwrap();
        let expected = CLAUDE_WRITTEN.replace(
            "\"command\": \"echo old\"",
            "\"command\": \"ct statusline\"",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn an_absent_member_is_appended_in_the_files_style_and_removing_it_restores_the_text() {
        let without = remove_member(CLAUDE_WRITTEN, "statusLine").unwrap();
        assert!(!without.contains("statusLine"));
        assert_eq!(
            serde_json::from_str::<Value>(&without).unwrap()["permissions"],
            json!({"allow": []})
        );
        let fields = [("type", json!("command")), ("command", json!("x"))];
        let value = json!({"type": "command", "command": "x"});
        let added = set_member_fields(&without, "statusLine", &fields).unwrap();
        assert!(
            added.ends_with(
                "  },\n  \"statusLine\": {\n    \"type\": \"command\",\n    \"command\": \"x\"\n  }\n}\n"
            ),
            "{added}"
        );
        assert_eq!(remove_member(&added, "statusLine").unwrap(), without);
        // Compact, tab-indented, CRLF and empty files keep their style too.
        for text in [
            r#"{"a":1}"#,
            "{\r\n\t\"a\": [1, 2]\r\n}\r\n",
            "{}\n",
            "{\n  \"statusLine\": 1,\n  \"b\": 2\n}",
        ] {
            let removed = remove_member(text, "statusLine").unwrap();
            let added = set_member_fields(&removed, "statusLine", &fields).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&added).unwrap()["statusLine"],
                value,
                "{added:?}"
            );
            assert_eq!(remove_member(&added, "statusLine").unwrap(), removed);
        }
        assert_eq!(
            set_member_fields(r#"{"a":1}"#, "statusLine", &fields).unwrap(),
            r#"{"a":1,"statusLine":{"type":"command","command":"x"}}"#
        );
        assert_eq!(
            set_member_fields("{\r\n\t\"a\": 1\r\n}\r\n", "s", &[("k", json!(1))]).unwrap(),
            "{\r\n\t\"a\": 1,\r\n\t\"s\": {\r\n\t\t\"k\": 1\r\n\t}\r\n}\r\n"
        );
    }

    #[test]
    fn values_with_braces_in_strings_and_escaped_keys_are_skipped_whole() {
        let text = r#"{"a\"}": "}{,\"", "statusLine": {"c": "]}"}, "z": [ {"x": "}"} ] }"#;
        assert_eq!(
            raw_value(text, "statusLine").unwrap().as_deref(),
            Some(r#"{"c": "]}"}"#)
        );
        let out = set_member_raw(text, "statusLine", "null").unwrap();
        assert_eq!(
            out,
            r#"{"a\"}": "}{,\"", "statusLine": null, "z": [ {"x": "}"} ] }"#
        );
        assert_eq!(raw_value(text, "nope").unwrap(), None);
    }

    #[test]
    fn bad_text_is_an_error_naming_the_line() {
        let e = set_member_fields("{\n  \"a\": 1,\n}", "k", &[]).unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(matches!(
            set_member_fields("[1]", "k", &[]),
            Err(EditError::NotObject)
        ));
    }
}
