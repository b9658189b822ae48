//! Privacy rules: conversation text, tool details, personal identifiers and redaction patterns,
//! applied to one attribute list (or log body) at a time.
//!
//! Decisions:
//! - Dropped text is REPLACED by the marker [`REDACTED`] (what claude itself sends when its
//!   switches are off), not removed: queries and dashboards see the same shape whatever the
//!   policy, and a reader can tell the relay withheld the value. `*_length` attributes stay.
//! - Dropped identifiers are REMOVED (a marker would merge every person into one value).
//! - Attributes are classified by key, wherever they appear (log records, spans, span events,
//!   links, resources, metric points), so a field that moves between releases stays covered.
//!   Two generic keys are narrowed by the record they sit on: `response` (also the rating of a
//!   `feedback_survey`) and `error` (tool output only on `tool_result` / tool spans).
//! - Redaction runs on every string value except identifier keys (their mode governs them)
//!   and values the policy already replaced. A value that parses as a JSON document is
//!   redacted leaf by leaf and re-serialised (object keys sorted), so the patterns see the
//!   unescaped text and the result stays valid JSON.

use hmac::{Hmac, KeyInit, Mac};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use regex::Regex;
use sha2::Sha256;

use crate::settings::policy::{IdentifierMode, PrivacySettings, TextMode};

/// The value that replaces dropped text and every redaction match.
pub const REDACTED: &str = "<REDACTED>";

/// Keys holding personal identifiers.
pub const IDENTIFIER_KEYS: [&str; 4] = [
    "user.email",
    "user.account_uuid",
    "organization.id",
    "user.id",
];

/// Keys holding conversation text: prompts, responses, raw API bodies, system prompts.
const CONVERSATION_KEYS: [&str; 9] = [
    "prompt",
    "response",
    "body",
    "user_prompt",
    "new_context",
    "system_prompt",
    "system_prompt_preview",
    "user_system_prompt",
    "system_reminders",
];

/// Keys holding tool details: parameters, inputs, commands, paths, content, output.
const TOOL_DETAIL_KEYS: [&str; 14] = [
    "tool_parameters",
    "tool_input",
    "full_command",
    "bash_command",
    "command",
    "file_path",
    "content",
    "output",
    "diff",
    "tool",
    "hook_definitions",
    "mcp_server_name",
    "mcp_tool_name",
    "skill_name",
];

/// Built-in secret patterns: Anthropic keys, bearer tokens, AWS access key ids and labelled
/// secret keys, e-mail addresses.
const BUILTIN_PATTERNS: [&str; 5] = [
    r"sk-ant-[A-Za-z0-9_\-]{8,}",
    r"(?i)(?-u:\b)bearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
    r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
];

/// What the record an attribute list belongs to says about its generic keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordContext {
    /// A `feedback_survey` event: its `response` is a rating, not conversation text.
    pub survey: bool,
    /// A `tool_result` event or tool span: its `error` carries tool output.
    pub tool: bool,
}

impl RecordContext {
    /// Context from an event name (`tool_result`, `claude_code.tool_result`) or span name
    /// (`claude_code.tool.execution`).
    pub fn from_name(name: &str) -> Self {
        let bare = name.strip_prefix("claude_code.").unwrap_or(name);
        RecordContext {
            survey: bare == "feedback_survey",
            tool: bare == "tool_result" || bare == "tool" || bare.starts_with("tool."),
        }
    }
}

enum Class {
    Conversation,
    ToolDetail,
    ToolName,
    Identifier,
    Other,
}

fn classify(key: &str, ctx: RecordContext) -> Class {
    if IDENTIFIER_KEYS.contains(&key) {
        Class::Identifier
    } else if key == "response" && ctx.survey {
        Class::Other
    } else if CONVERSATION_KEYS.contains(&key) {
        Class::Conversation
    } else if TOOL_DETAIL_KEYS.contains(&key) || (key == "error" && ctx.tool) {
        Class::ToolDetail
    } else if key == "tool_name" {
        Class::ToolName
    } else {
        Class::Other
    }
}

/// Pseudonyms already computed while processing one request: the same `user.id` sits on every
/// point and record, so one HMAC per distinct value is enough.
#[derive(Debug, Default)]
pub struct PseudonymCache {
    entries: Vec<(String, String)>,
}

/// Compiled regex list; one combined alternation when possible (one scan per value).
#[derive(Debug, Clone)]
struct Redactor {
    regexes: Vec<Regex>,
}

impl Redactor {
    fn new(patterns: &[String]) -> Result<Option<Self>, regex::Error> {
        if patterns.is_empty() {
            return Ok(None);
        }
        for p in patterns {
            Regex::new(p)?;
        }
        let combined = patterns
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        let regexes = match Regex::new(&combined) {
            Ok(one) => vec![one],
            // Duplicate group names across patterns: keep them apart.
            Err(_) => patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(Redactor { regexes }))
    }

    /// The redacted text, or `None` when nothing matched.
    fn redact_text(&self, text: &str) -> Option<String> {
        let mut current: Option<String> = None;
        for re in &self.regexes {
            let haystack = current.as_deref().unwrap_or(text);
            if let std::borrow::Cow::Owned(s) = re.replace_all(haystack, REDACTED) {
                current = Some(s);
            }
        }
        current
    }

    /// Like [`Redactor::redact_text`], but a JSON document is redacted leaf by leaf.
    fn redact_value_text(&self, text: &str) -> Option<String> {
        let first = text.trim_start().as_bytes().first();
        if matches!(first, Some(b'{') | Some(b'['))
            && let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(text)
        {
            return if self.redact_json(&mut doc) {
                serde_json::to_string(&doc).ok()
            } else {
                None
            };
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
}

/// The compiled `[privacy]` section.
#[derive(Clone)]
pub struct Privacy {
    prompts: TextMode,
    tool_details: TextMode,
    identifiers: IdentifierMode,
    mac: Option<Hmac<Sha256>>,
    redactor: Option<Redactor>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("prompts", &self.prompts)
            .field("tool_details", &self.tool_details)
            .field("identifiers", &self.identifiers)
            .field("redactor", &self.redactor)
            .finish_non_exhaustive()
    }
}

/// Why `[privacy]` could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A redaction pattern is not a valid regex (validation should have caught it).
    #[error("invalid redaction pattern: {0}")]
    Regex(#[from] regex::Error),
    /// `identifiers = "hash"` without a key.
    #[error("identifiers are hashed but no hashing key was provided")]
    MissingKey,
}

impl Privacy {
    /// Compiles the section; `hash_key` is the team key or the per-installation secret.
    pub fn new(settings: &PrivacySettings, hash_key: &[u8]) -> Result<Self, PrivacyError> {
        let mac = match settings.identifiers {
            IdentifierMode::Hash if hash_key.is_empty() => return Err(PrivacyError::MissingKey),
            IdentifierMode::Hash => Some(
                Hmac::<Sha256>::new_from_slice(hash_key).map_err(|_| PrivacyError::MissingKey)?,
            ),
            _ => None,
        };
        let mut patterns: Vec<String> = Vec::new();
        if settings.builtin_redactions {
            patterns.extend(BUILTIN_PATTERNS.iter().map(|p| p.to_string()));
        }
        patterns.extend(settings.redact.iter().cloned());
        Ok(Privacy {
            prompts: settings.prompts,
            tool_details: settings.tool_details,
            identifiers: settings.identifiers,
            mac,
            redactor: Redactor::new(&patterns)?,
        })
    }

    /// The keyed pseudonym of one identifier: lower-case hex HMAC-SHA256.
    pub fn pseudonym(&self, value: &str) -> Option<String> {
        let mut mac = self.mac.clone()?;
        mac.update(value.as_bytes());
        let bytes = mac.finalize().into_bytes();
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn pseudonym_cached(&self, value: &str, cache: &mut PseudonymCache) -> Option<String> {
        if let Some((_, p)) = cache.entries.iter().find(|(v, _)| v == value) {
            return Some(p.clone());
        }
        let p = self.pseudonym(value)?;
        cache.entries.push((value.to_string(), p.clone()));
        Some(p)
    }

    /// Applies every rule to one attribute list. Returns whether an attribute was removed (the
    /// caller then merges metric points that became identical).
    pub fn apply_attributes(
        &self,
        attrs: &mut Vec<KeyValue>,
        ctx: RecordContext,
        cache: &mut PseudonymCache,
    ) -> bool {
        let before = attrs.len();
        attrs.retain_mut(|kv| self.apply_key_value(kv, ctx, cache));
        attrs.len() != before
    }

    /// Applies the rules to one attribute; `false` means remove it.
    fn apply_key_value(
        &self,
        kv: &mut KeyValue,
        ctx: RecordContext,
        cache: &mut PseudonymCache,
    ) -> bool {
        match classify(&kv.key, ctx) {
            Class::Identifier => return self.apply_identifier(kv, cache),
            Class::Conversation if self.prompts == TextMode::Drop => set_marker(kv),
            Class::ToolDetail if self.tool_details == TextMode::Drop => set_marker(kv),
            Class::ToolName if self.tool_details == TextMode::Drop => {
                if let Some(Value::StringValue(s)) =
                    kv.value.as_mut().and_then(|v| v.value.as_mut())
                    && s.starts_with("mcp__")
                {
                    *s = "mcp_tool".into();
                }
            }
            _ => {
                if let Some(v) = kv.value.as_mut() {
                    self.redact_any(v);
                }
            }
        }
        true
    }

    fn apply_identifier(&self, kv: &mut KeyValue, cache: &mut PseudonymCache) -> bool {
        match self.identifiers {
            IdentifierMode::Keep => true,
            IdentifierMode::Drop => false,
            IdentifierMode::Hash => {
                let text = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    None => return true,
                    // Structured identifiers cannot be pseudonymised faithfully: remove them.
                    Some(_) => return false,
                };
                match self.pseudonym_cached(&text, cache) {
                    Some(p) => {
                        kv.value = Some(string_value(p));
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Applies the redaction patterns to any value (log bodies, nested lists and maps).
    pub fn redact_any(&self, value: &mut AnyValue) {
        let Some(redactor) = &self.redactor else {
            return;
        };
        redact_any_with(redactor, value);
    }
}

fn redact_any_with(redactor: &Redactor, value: &mut AnyValue) {
    match value.value.as_mut() {
        Some(Value::StringValue(s)) => {
            if let Some(new) = redactor.redact_value_text(s) {
                *s = new;
            }
        }
        Some(Value::ArrayValue(a)) => {
            for v in &mut a.values {
                redact_any_with(redactor, v);
            }
        }
        Some(Value::KvlistValue(list)) => {
            for kv in &mut list.values {
                if let Some(v) = kv.value.as_mut() {
                    redact_any_with(redactor, v);
                }
            }
        }
        _ => {}
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s)),
    }
}

fn set_marker(kv: &mut KeyValue) {
    kv.value = Some(string_value(REDACTED.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(string_value(value.into())),
            ..Default::default()
        }
    }

    fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attrs.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            }
        })
    }

    fn privacy(settings: &PrivacySettings, key: &[u8]) -> Privacy {
        Privacy::new(settings, key).expect("privacy compiles")
    }

    fn apply(p: &Privacy, attrs: &mut Vec<KeyValue>, ctx: RecordContext) -> bool {
        p.apply_attributes(attrs, ctx, &mut PseudonymCache::default())
    }

    #[test]
    fn same_key_gives_same_pseudonym_and_different_keys_differ() {
        let s = PrivacySettings::default();
        let a1 = privacy(&s, b"team-key-one-0123456789");
        let a2 = privacy(&s, b"team-key-one-0123456789");
        let b = privacy(&s, b"team-key-two-0123456789");
        let email = "ada@example.com";
        let pa = a1.pseudonym(email).expect("hash mode");
        assert_eq!(pa, a2.pseudonym(email).expect("hash mode"));
        assert_ne!(pa, b.pseudonym(email).expect("hash mode"));
        assert_eq!(pa.len(), 64);
        assert!(pa.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!pa.contains("ada"));
    }

    #[test]
    fn hash_mode_without_a_key_is_refused() {
        let err = Privacy::new(&PrivacySettings::default(), b"").expect_err("needs a key");
        assert!(matches!(err, PrivacyError::MissingKey));
    }

    #[test]
    fn identifiers_are_hashed_kept_or_removed() {
        let mut s = PrivacySettings::default();
        let mut attrs = vec![kv("user.email", "ada@example.com"), kv("session.id", "s1")];
        let changed = apply(&privacy(&s, b"k"), &mut attrs, RecordContext::default());
        assert!(!changed);
        let hashed = get(&attrs, "user.email").expect("still present");
        assert_eq!(hashed.len(), 64);
        assert_eq!(get(&attrs, "session.id"), Some("s1"));

        s.identifiers = IdentifierMode::Keep;
        let mut attrs = vec![kv("user.email", "ada@example.com")];
        apply(&privacy(&s, b""), &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "user.email"), Some("ada@example.com"));

        s.identifiers = IdentifierMode::Drop;
        let mut attrs = vec![kv("user.account_uuid", "u-1"), kv("organization.id", "o")];
        assert!(apply(
            &privacy(&s, b""),
            &mut attrs,
            RecordContext::default()
        ));
        assert!(attrs.is_empty());
    }

    #[test]
    fn conversation_text_is_replaced_by_the_marker_unless_kept() {
        let mut s = PrivacySettings::default();
        let mut attrs = vec![kv("prompt", "fix my bug"), kv("prompt_length", "10")];
        apply(&privacy(&s, b"k"), &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "prompt"), Some(REDACTED));
        assert_eq!(get(&attrs, "prompt_length"), Some("10"));

        s.prompts = TextMode::Keep;
        let mut attrs = vec![kv("prompt", "fix my bug")];
        apply(&privacy(&s, b"k"), &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "prompt"), Some("fix my bug"));
    }

    #[test]
    fn survey_rating_is_not_conversation_text_but_tool_errors_are_tool_details() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let mut attrs = vec![kv("response", "good")];
        apply(&p, &mut attrs, RecordContext::from_name("feedback_survey"));
        assert_eq!(get(&attrs, "response"), Some("good"));
        let mut attrs = vec![kv("error", "cat: /home/ada/secret.txt: denied")];
        apply(&p, &mut attrs, RecordContext::from_name("tool_result"));
        assert_eq!(get(&attrs, "error"), Some(REDACTED));
        let mut attrs = vec![kv("error", "overloaded")];
        apply(&p, &mut attrs, RecordContext::from_name("api_error"));
        assert_eq!(get(&attrs, "error"), Some("overloaded"));
    }

    #[test]
    fn tool_details_and_mcp_tool_names_are_dropped_by_default() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let mut attrs = vec![
            kv("tool_parameters", r#"{"bash_command":"rm -rf build"}"#),
            kv("full_command", "rm -rf build"),
            kv("tool_name", "mcp__github__create_issue"),
        ];
        apply(&p, &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "tool_parameters"), Some(REDACTED));
        assert_eq!(get(&attrs, "full_command"), Some(REDACTED));
        assert_eq!(get(&attrs, "tool_name"), Some("mcp_tool"));
    }

    #[test]
    fn builtin_patterns_redact_keys_tokens_aws_and_emails() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let text = "key sk-ant-api03-AbCdEf012345-xyz, Authorization: Bearer abc.def-123456, \
                    AKIAIOSFODNN7EXAMPLE, aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, \
                    mail ada.lovelace@example.co.uk";
        let mut attrs = vec![kv("error", text)];
        apply(&p, &mut attrs, RecordContext::default());
        let out = get(&attrs, "error").expect("present");
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
    fn kept_json_documents_are_redacted_inside_and_stay_valid_json() {
        let s = PrivacySettings {
            tool_details: TextMode::Keep,
            redact: vec![r"hunter\d".into()],
            ..PrivacySettings::default()
        };
        let p = privacy(&s, b"k");
        let params = r#"{"bash_command":"curl -H 'x-api-key: sk-ant-api03-SECRETSECRET'","full_command":"echo hunter2\nmail ada@example.com","description":"call"}"#;
        let mut attrs = vec![kv("tool_parameters", params)];
        apply(&p, &mut attrs, RecordContext::default());
        let out = get(&attrs, "tool_parameters").expect("present");
        let doc: serde_json::Value = serde_json::from_str(out).expect("still JSON");
        assert_eq!(doc["bash_command"], "curl -H 'x-api-key: <REDACTED>'");
        assert_eq!(doc["full_command"], "echo <REDACTED>\nmail <REDACTED>");
        assert_eq!(doc["description"], "call");
    }

    #[test]
    fn identifiers_are_not_touched_by_email_redaction_when_kept() {
        let s = PrivacySettings {
            identifiers: IdentifierMode::Keep,
            ..PrivacySettings::default()
        };
        let mut attrs = vec![kv("user.email", "ada@example.com")];
        apply(&privacy(&s, b""), &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "user.email"), Some("ada@example.com"));
    }

    #[test]
    fn user_patterns_apply_without_builtins_and_in_nested_values() {
        let s = PrivacySettings {
            redact: vec![r"TICKET-\d+".into()],
            builtin_redactions: false,
            ..PrivacySettings::default()
        };
        let p = privacy(&s, b"k");
        let mut body = AnyValue {
            value: Some(Value::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![kv("msg", "see TICKET-42 from ada@example.com")],
                },
            )),
        };
        p.redact_any(&mut body);
        let Some(Value::KvlistValue(list)) = body.value else {
            panic!("kvlist expected");
        };
        assert_eq!(
            get(&list.values, "msg"),
            Some("see <REDACTED> from ada@example.com")
        );
    }

    #[test]
    fn patterns_sharing_group_names_still_compile() {
        let s = PrivacySettings {
            redact: vec![r"(?P<x>aa)".into(), r"(?P<x>bb)".into()],
            ..PrivacySettings::default()
        };
        let p = privacy(&s, b"k");
        let mut attrs = vec![kv("note", "aa bb cc")];
        apply(&p, &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "note"), Some("<REDACTED> <REDACTED> cc"));
    }
}
