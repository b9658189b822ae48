//! Privacy rules: conversation text, tool details and personal identifiers, applied to one
//! attribute list (or log body) at a time, with the redaction patterns of `redact.rs`.
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
//! - Redaction (`redact.rs`) runs on every other string value, kept text included; identifier
//!   keys are governed by their mode alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use sha2::Sha256;

use super::redact::{REDACTED, Redactor};
use crate::settings::policy::{IdentifierMode, PrivacySettings, TextMode};

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
    match key {
        // Personal identifiers.
        "user.email" | "user.account_uuid" | "organization.id" | "user.id" => Class::Identifier,
        "response" if ctx.survey => Class::Other,
        // Conversation text: prompts, responses, raw API bodies, system prompts, context.
        "prompt"
        | "response"
        | "body"
        | "user_prompt"
        | "new_context"
        | "system_prompt"
        | "system_prompt_preview"
        | "user_system_prompt"
        | "system_reminders" => Class::Conversation,
        // Tool details: parameters, inputs, commands, paths, content, output.
        "tool_parameters" | "tool_input" | "full_command" | "bash_command" | "command"
        | "file_path" | "content" | "output" | "diff" | "tool" | "hook_definitions"
        | "mcp_server_name" | "mcp_tool_name" | "skill_name" => Class::ToolDetail,
        "error" if ctx.tool => Class::ToolDetail,
        "tool_name" => Class::ToolName,
        _ => Class::Other,
    }
}

/// Pseudonyms already computed while processing one request: the same `user.id` sits on every
/// point and record, so one HMAC per distinct value is enough.
#[derive(Debug, Default)]
pub struct PseudonymCache {
    entries: Vec<(String, String)>,
}

/// The compiled `[privacy]` section.
#[derive(Clone)]
pub struct Privacy {
    prompts: TextMode,
    tool_details: TextMode,
    identifiers: IdentifierMode,
    mac: Option<Hmac<Sha256>>,
    redactor: Option<Redactor>,
    shared: Arc<Mutex<HashMap<String, String>>>,
}

/// Pseudonym length: 128 bits of the HMAC (truncation as RFC 2104 §5 allows). Two people
/// collide only around 2^64 identities, and 32 hex characters fit in the buffer of the UUIDs
/// and ids they replace, so hashing a metric point allocates nothing for them.
pub const PSEUDONYM_BYTES: usize = 16;

/// Distinct identifiers remembered across requests (a launch sees a handful).
const SHARED_CACHE_LIMIT: usize = 1024;

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
        Ok(Privacy {
            prompts: settings.prompts,
            tool_details: settings.tool_details,
            identifiers: settings.identifiers,
            mac,
            redactor: Redactor::new(settings.builtin_redactions, &settings.redact)?,
            shared: Arc::default(),
        })
    }

    /// The keyed pseudonym of one identifier: the first [`PSEUDONYM_BYTES`] of
    /// HMAC-SHA256(key, value) as lower-case hex.
    pub fn pseudonym(&self, value: &str) -> Option<String> {
        let mut mac = self.mac.clone()?;
        mac.update(value.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(2 * PSEUDONYM_BYTES);
        for b in bytes.iter().take(PSEUDONYM_BYTES) {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Some(out)
    }

    /// The pseudonym of `value`: from the request's cache (no lock), else the policy's (one
    /// lock per distinct value and request), else computed.
    fn pseudonym_cached<'c>(&self, value: &str, cache: &'c mut PseudonymCache) -> Option<&'c str> {
        let at = match cache.entries.iter().position(|(v, _)| v == value) {
            Some(at) => at,
            None => {
                let p = self.pseudonym_shared(value)?;
                cache.entries.push((value.to_string(), p));
                cache.entries.len() - 1
            }
        };
        Some(cache.entries[at].1.as_str())
    }

    fn pseudonym_shared(&self, value: &str) -> Option<String> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still a
        // valid cache.
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = shared.get(value) {
            return Some(p.clone());
        }
        let p = self.pseudonym(value)?;
        if shared.len() >= SHARED_CACHE_LIMIT {
            shared.clear();
        }
        shared.insert(value.to_string(), p.clone());
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
            IdentifierMode::Hash => match kv.value.as_mut().and_then(|v| v.value.as_mut()) {
                Some(Value::StringValue(s)) => match self.pseudonym_cached(s, cache) {
                    Some(p) => {
                        if s.capacity() >= p.len() {
                            s.clear();
                            s.push_str(p);
                        } else {
                            // A fresh buffer: growing would copy the identifier first.
                            *s = p.to_string();
                        }
                        true
                    }
                    None => false,
                },
                Some(Value::IntValue(i)) => match self.pseudonym_cached(&i.to_string(), cache) {
                    Some(p) => {
                        kv.value = Some(string_value(p.to_string()));
                        true
                    }
                    None => false,
                },
                None => true,
                // Structured identifiers cannot be pseudonymised faithfully: remove them.
                Some(_) => false,
            },
        }
    }

    /// Applies the redaction patterns to any value (log bodies, nested lists and maps).
    pub fn redact_any(&self, value: &mut AnyValue) {
        if let Some(redactor) = &self.redactor {
            redactor.redact_any(value);
        }
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s)),
    }
}

fn set_marker(kv: &mut KeyValue) {
    match kv.value.as_mut().and_then(|v| v.value.as_mut()) {
        Some(Value::StringValue(s)) => {
            s.clear();
            s.push_str(REDACTED);
        }
        _ => kv.value = Some(string_value(REDACTED.to_string())),
    }
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
        assert_eq!(pa.len(), 2 * PSEUDONYM_BYTES);
        assert!(pa.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!pa.contains("ada"));
    }

    #[test]
    fn pseudonym_is_truncated_hmac_sha256() {
        // RFC 4231 test case 2.
        let p = privacy(&PrivacySettings::default(), b"Jefe");
        assert_eq!(
            p.pseudonym("what do ya want for nothing?").as_deref(),
            Some("5bdcc146bf60754e6a042426089575c7")
        );
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
        assert_eq!(hashed.len(), 2 * PSEUDONYM_BYTES);
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
}
