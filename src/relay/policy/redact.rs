//! Redaction patterns: the built-in secret patterns behind a cheap literal prefilter, the
//! user's patterns, and JSON documents redacted leaf by leaf.
//!
//! Every match becomes [`REDACTED`]. A value that parses as a JSON document (what claude puts in
//! `tool_parameters`, `tool_input`, raw API bodies) is redacted leaf by leaf and re-serialised
//! (object keys then sorted), so the patterns see the unescaped text and the result stays valid
//! JSON; a document with nothing to redact is left byte-identical.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use regex::Regex;

/// The value that replaces dropped text and every redaction match.
pub const REDACTED: &str = "<REDACTED>";

/// Built-in secret patterns: Anthropic keys, bearer tokens, AWS access key ids and labelled
/// secret keys, e-mail addresses. [`may_hold_builtin_secret`] must accept every text any of
/// them can match.
const BUILTIN_PATTERNS: [&str; 5] = [
    r"sk-ant-[A-Za-z0-9_\-]{8,}",
    r"(?i)(?-u:\b)bearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
    r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
];

/// Cheap necessary condition for [`BUILTIN_PATTERNS`]: each pattern requires one of the
/// literals `@`, `sk-ant-`, `bearer`, `AKIA`/`ASIA`, `secret` (none of which JSON escapes).
/// The scan stops only at bytes that are rare in machine-made values (`@ k K I r R`: absent
/// from hex ids, UUIDs, numbers and timestamps) and checks the literals around them, so most
/// attribute values cost one table lookup per byte and never reach the regex.
#[inline]
fn may_hold_builtin_secret(text: &str) -> bool {
    const fn anchors() -> [bool; 256] {
        let mut t = [false; 256];
        t[b'@' as usize] = true;
        t[b'k' as usize] = true;
        t[b'K' as usize] = true;
        t[b'I' as usize] = true;
        t[b'r' as usize] = true;
        t[b'R' as usize] = true;
        t
    }
    static ANCHOR: [bool; 256] = anchors();
    let b = text.as_bytes();
    // The shortest text any built-in matches is an e-mail like `a@b.cd`.
    if b.len() < 6 {
        return false;
    }
    let at = |start: usize, lit: &[u8], ci: bool| -> bool {
        b.get(start..start + lit.len()).is_some_and(|w| {
            if ci {
                w.eq_ignore_ascii_case(lit)
            } else {
                w == lit
            }
        })
    };
    b.iter().enumerate().any(|(i, &c)| {
        ANCHOR[usize::from(c)]
            && match c {
                b'@' => true,
                // `sk-ant-`: the k is at offset 1.
                b'k' => i >= 1 && at(i - 1, b"sk-ant-", false),
                // `AKIA`: K at 1; `ASIA`: I at 2.
                b'K' => i >= 1 && at(i - 1, b"AKIA", false),
                b'I' => i >= 2 && at(i - 2, b"ASIA", false),
                // `bearer`: r at 3 and 5 (checking at 5 suffices); `secret`: r at 3.
                _ => {
                    (i >= 5 && at(i - 5, b"bearer", true)) || (i >= 3 && at(i - 3, b"secret", true))
                }
            }
    })
}

/// Compiled redaction patterns: the built-ins behind a literal prefilter, the user's in one
/// combined alternation when possible (one scan per value).
#[derive(Debug, Clone)]
pub struct Redactor {
    builtin: Option<Regex>,
    user: Vec<Regex>,
    /// A user pattern may use `^`/`$`/`\A`/`\z`, which see a JSON leaf and the whole document
    /// differently; such patterns force leaf-by-leaf checks.
    user_anchored: bool,
}

fn combine(patterns: &[String]) -> Result<Vec<Regex>, regex::Error> {
    for p in patterns {
        Regex::new(p)?;
    }
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let combined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    match Regex::new(&combined) {
        Ok(one) => Ok(vec![one]),
        // Duplicate group names across patterns: keep them apart.
        Err(_) => patterns.iter().map(|p| Regex::new(p)).collect(),
    }
}

impl Redactor {
    /// Compiles the built-ins (when `builtins`) and the user's patterns; `None` when there is
    /// nothing to apply.
    pub fn new(builtins: bool, user: &[String]) -> Result<Option<Self>, regex::Error> {
        let builtin = if builtins {
            let all: Vec<String> = BUILTIN_PATTERNS.iter().map(|p| p.to_string()).collect();
            combine(&all)?.into_iter().next()
        } else {
            None
        };
        let user_anchored = user
            .iter()
            .any(|p| p.contains(['^', '$']) || p.contains("\\A") || p.contains("\\z"));
        let user = combine(user)?;
        if builtin.is_none() && user.is_empty() {
            return Ok(None);
        }
        Ok(Some(Redactor {
            builtin,
            user,
            user_anchored,
        }))
    }

    /// The redacted text, or `None` when nothing matched.
    fn redact_text(&self, text: &str) -> Option<String> {
        let mut current: Option<String> = None;
        let builtin = self
            .builtin
            .as_ref()
            .filter(|_| may_hold_builtin_secret(text));
        for re in builtin.into_iter().chain(&self.user) {
            let haystack = current.as_deref().unwrap_or(text);
            if let std::borrow::Cow::Owned(s) = re.replace_all(haystack, REDACTED) {
                current = Some(s);
            }
        }
        current
    }

    /// Whether no leaf of the JSON document `raw` can match, decided on the raw text: the
    /// built-in literals survive JSON escaping; an unanchored user pattern that does not match
    /// the raw text cannot match a leaf when nothing in it is escaped (a leaf is then a
    /// verbatim substring, delimited by `"`, which word boundaries treat like a text edge).
    fn json_is_clean(&self, raw: &str) -> bool {
        if self.builtin.is_some() && may_hold_builtin_secret(raw) {
            return false;
        }
        if self.user.is_empty() {
            return true;
        }
        !self.user_anchored && !raw.contains('\\') && !self.user.iter().any(|re| re.is_match(raw))
    }

    /// Like [`Redactor::redact_text`], but a JSON document is redacted leaf by leaf.
    pub fn redact_value_text(&self, text: &str) -> Option<String> {
        // Fast path for the common case (built-ins only, value without their literals); exact
        // for JSON documents too, since JSON never escapes those literals.
        if self.user.is_empty() && !may_hold_builtin_secret(text) {
            return None;
        }
        let first = text.trim_start().as_bytes().first();
        if matches!(first, Some(b'{') | Some(b'[')) {
            if self.json_is_clean(text) {
                return None;
            }
            if let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(text) {
                return if self.redact_json(&mut doc) {
                    serde_json::to_string(&doc).ok()
                } else {
                    None
                };
            }
        }
        self.redact_text(text)
    }

    fn redact_json(&self, doc: &mut serde_json::Value) -> bool {
        match doc {
            serde_json::Value::String(s) => match self.redact_value_text(s) {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            },
            serde_json::Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| self.redact_json(v) | changed),
            serde_json::Value::Object(map) => map
                .values_mut()
                .fold(false, |changed, v| self.redact_json(v) | changed),
            _ => false,
        }
    }

    /// Applies the patterns to any value: strings, and the strings inside lists and maps.
    pub fn redact_any(&self, value: &mut AnyValue) {
        match value.value.as_mut() {
            // The common case inline: built-ins only and none of their literals.
            Some(Value::StringValue(s)) if self.user.is_empty() && !may_hold_builtin_secret(s) => {}
            Some(Value::StringValue(s)) => {
                if let Some(new) = self.redact_value_text(s) {
                    *s = new;
                }
            }
            Some(Value::ArrayValue(a)) => {
                for v in &mut a.values {
                    self.redact_any(v);
                }
            }
            Some(Value::KvlistValue(list)) => {
                for kv in &mut list.values {
                    if let Some(v) = kv.value.as_mut() {
                        self.redact_any(v);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(builtins: bool, user: &[&str]) -> Redactor {
        let user: Vec<String> = user.iter().map(|p| p.to_string()).collect();
        Redactor::new(builtins, &user)
            .expect("patterns compile")
            .expect("something to apply")
    }

    fn redact(r: &Redactor, text: &str) -> String {
        r.redact_value_text(text)
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn builtin_patterns_redact_keys_tokens_aws_and_emails() {
        let r = redactor(true, &[]);
        let text = "key sk-ant-api03-AbCdEf012345-xyz, Authorization: Bearer abc.def-123456, \
                    AKIAIOSFODNN7EXAMPLE, aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, \
                    mail ada.lovelace@example.co.uk";
        let out = redact(&r, text);
        for secret in [
            "sk-ant-",
            "abc.def-123456",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI",
            "ada.lovelace",
            "example.co.uk",
        ] {
            assert!(!out.contains(secret), "{secret} survived in {out}");
        }
        assert!(out.starts_with("key <REDACTED>"), "{out}");
    }

    #[test]
    fn ordinary_values_are_untouched() {
        let r = redactor(true, &[]);
        for text in [
            "claude-opus-4-8[1m]",
            "3b1f7c2e-8d4a-4f6b-9c0e-1a2b3c4d5e6f",
            "2025-11-25T15:05:01.123Z",
            "secretary desk",
            "Bearer",
        ] {
            assert_eq!(r.redact_value_text(text), None, "{text}");
        }
    }

    #[test]
    fn user_patterns_apply_without_builtins_and_in_nested_values() {
        let r = redactor(false, &[r"TICKET-\d+"]);
        let mut body = AnyValue {
            value: Some(Value::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                        key: "msg".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(
                                "see TICKET-42 from ada@example.com".into(),
                            )),
                        }),
                        ..Default::default()
                    }],
                },
            )),
        };
        r.redact_any(&mut body);
        let Some(Value::KvlistValue(list)) = body.value else {
            panic!("kvlist expected");
        };
        let Some(Value::StringValue(msg)) =
            list.values[0].value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("string expected");
        };
        assert_eq!(msg, "see <REDACTED> from ada@example.com");
    }

    #[test]
    fn patterns_sharing_group_names_still_compile() {
        let r = redactor(true, &[r"(?P<x>aa)", r"(?P<x>bb)"]);
        assert_eq!(redact(&r, "aa bb cc"), "<REDACTED> <REDACTED> cc");
    }

    #[test]
    fn json_leaves_are_checked_when_escapes_or_anchors_hide_a_match_in_the_raw_text() {
        let r = redactor(false, &[r"password:\s+\S+", r"^internal-only"]);
        let escaped = r#"{"cmd":"login\npassword:\nhunter2","note":"internal-only plan"}"#;
        let doc: serde_json::Value = serde_json::from_str(&redact(&r, escaped)).expect("JSON");
        assert_eq!(doc["cmd"], "login\n<REDACTED>");
        assert_eq!(doc["note"], "<REDACTED> plan");
    }

    #[test]
    fn clean_json_is_left_byte_identical() {
        let r = redactor(true, &[r"TICKET-\d+"]);
        let raw = r#"{"z":"ls -la","a":"list files"}"#;
        assert_eq!(r.redact_value_text(raw), None, "key order untouched");
    }

    proptest::proptest! {
        #[test]
        fn prefilter_accepts_every_text_a_builtin_pattern_matches(
            text in "(sk-ant-[A-Za-z0-9]{0,12}|[Bb][Ee][Aa][Rr][Ee][Rr][ \\t]{1,2}[a-z0-9.]{0,12}|A[KS]IA[A-Z0-9]{0,18}|[Aa][Ww][Ss]_?[Ss][Ee][Cc][Rr][Ee][Tt]_?[Aa]ccess_?[Kk]ey ?= ?[A-Za-z0-9]{0,42}|[a-z.]{0,6}@[a-z]{0,5}\\.[a-z]{0,3}|[ -~]{0,8}){1,4}"
        ) {
            let all: Vec<String> = BUILTIN_PATTERNS.iter().map(|p| p.to_string()).collect();
            let re = combine(&all).expect("builtins compile").remove(0);
            if re.is_match(&text) {
                proptest::prop_assert!(may_hold_builtin_secret(&text), "{}", text);
            }
        }
    }
}
