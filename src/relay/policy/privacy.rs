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
//! - Fail closed: a key not in [`KEYS`] (a field a newer Claude Code release added, or another
//!   sender's) may be conversation text, so its text is replaced by the marker unless
//!   `privacy.allow_attributes` allows it. Numbers, booleans and number-like strings pass (they
//!   cannot carry a prompt or a path; claude sends some numbers as strings). The key NAME is
//!   noted for `doctor`; the value never is. A log body passes only as claude's constant
//!   `claude_code.<event>` (or a number/boolean); any other is withheld as key `log.body`.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Conversation,
    ToolDetail,
    ToolName,
    Identifier,
    /// Known to carry no conversation text, tool detail or identifier: passes (the redaction
    /// patterns still apply).
    Known,
    /// Not in [`KEYS`]: a string passes only when it reads as a number or boolean, or the key
    /// is allowed (`privacy.allow_attributes`).
    Unknown,
}

/// Every attribute key the relay knows, sorted (for people; a unit test checks order and
/// uniqueness), looked up through [`KeyTable`].
/// From the catalogue (`docs/claude-code-telemetry.md`) as observed on claude 2.1.197 and
/// 2.1.332: log records, metric points, spans, span events and resources. A key a later release
/// adds is [`Class::Unknown`] until it is listed here or allowed by the user.
const KEYS: &[(&str, Class)] = &[
    ("agent_path_count", Class::Known),
    ("anthropic.custom_base_url", Class::Known),
    ("anthropic.provider", Class::Known),
    ("app.version", Class::Known),
    ("attempt", Class::Known),
    ("bash_argv0", Class::ToolDetail),
    ("bash_command", Class::ToolDetail),
    ("bash_command_class", Class::Known),
    ("body", Class::Conversation),
    ("body_length", Class::Known),
    ("body_truncated", Class::Known),
    // The launcher's own `claude_telemetry.budget` gauge (src/budget/export.rs).
    ("budget.period", Class::Known),
    ("budget.scope", Class::Known),
    ("cache_creation_1h_tokens", Class::Known),
    ("cache_creation_5m_tokens", Class::Known),
    ("cache_creation_tokens", Class::Known),
    ("cache_read_tokens", Class::Known),
    ("command", Class::ToolDetail),
    ("command_name", Class::Known),
    ("command_path_count", Class::Known),
    ("content", Class::ToolDetail),
    ("cost_usd", Class::Known),
    ("cost_usd_micros", Class::Known),
    ("decision", Class::Known),
    ("decision_source", Class::Known),
    ("decision_type", Class::Known),
    ("diff", Class::ToolDetail),
    ("duration_ms", Class::Known),
    ("effort", Class::Known),
    ("enabled_via", Class::Known),
    // The API's error message (`api_error`); tool output when on a tool record (see classify).
    ("error", Class::Known),
    ("event.name", Class::Known),
    ("event.sequence", Class::Known),
    ("event.timestamp", Class::Known),
    ("file_path", Class::ToolDetail),
    ("first_content_ms", Class::Known),
    ("full_command", Class::ToolDetail),
    ("gen_ai.conversation.id", Class::Known),
    ("gen_ai.operation.name", Class::Known),
    ("gen_ai.provider.name", Class::Known),
    ("gen_ai.request.model", Class::Known),
    ("gen_ai.response.finish_reasons", Class::Known),
    ("gen_ai.response.id", Class::Known),
    ("gen_ai.response.model", Class::Known),
    ("gen_ai.system", Class::Known),
    ("gen_ai.tool.call.id", Class::Known),
    ("gen_ai.tool.name", Class::ToolName),
    ("gen_ai.usage.cache_read.input_tokens", Class::Known),
    ("gen_ai.usage.cache_write.input_tokens", Class::Known),
    ("gen_ai.usage.input_tokens", Class::Known),
    ("gen_ai.usage.output_tokens", Class::Known),
    ("has_hooks", Class::Known),
    ("has_mcp", Class::Known),
    ("hook_definitions", Class::ToolDetail),
    ("host.arch", Class::Known),
    ("host_owned_mcp", Class::Known),
    ("input_tokens", Class::Known),
    ("interaction.duration_ms", Class::Known),
    ("interaction.sequence", Class::Known),
    ("language", Class::Known),
    ("llm_request.context", Class::Known),
    ("managed_settings.helper.applied", Class::Known),
    ("managed_settings.helper.state", Class::Known),
    ("managed_settings.source_behavior", Class::Known),
    ("managed_settings.sources", Class::Known),
    ("managed_settings.trigger", Class::Known),
    ("marketplace.name", Class::ToolDetail),
    ("mcp_server_name", Class::ToolDetail),
    ("mcp_tool_name", Class::ToolDetail),
    ("message.id", Class::Known),
    ("message.uuid", Class::Known),
    ("model", Class::Known),
    ("new_context", Class::Conversation),
    ("organization.id", Class::Identifier),
    ("os.type", Class::Known),
    ("os.version", Class::Known),
    ("output", Class::ToolDetail),
    ("output_tokens", Class::Known),
    ("parent.source", Class::Known),
    ("permission_mode", Class::Known),
    ("plugin.name", Class::ToolDetail),
    ("plugin.scope", Class::Known),
    ("plugin_id_hash", Class::Known),
    ("project.name", Class::Known),
    ("prompt", Class::Conversation),
    ("prompt.id", Class::Known),
    ("prompt_length", Class::Known),
    ("prompt_text", Class::Conversation),
    ("query_source", Class::Known),
    ("query_source_safe", Class::Known),
    ("queued_sends", Class::Known),
    ("request_body_id", Class::Known),
    ("request_id", Class::Known),
    ("response", Class::Conversation),
    ("response_length", Class::Known),
    ("safe_mode", Class::Known),
    ("service.instance.id", Class::Known),
    ("service.name", Class::Known),
    ("service.version", Class::Known),
    ("session.id", Class::Known),
    ("skill_name", Class::ToolDetail),
    ("skill_path_count", Class::Known),
    ("source", Class::Known),
    ("span.type", Class::Known),
    ("speed", Class::Known),
    ("start_type", Class::Known),
    ("status_code", Class::Known),
    ("stop_reason", Class::Known),
    ("success", Class::Known),
    ("system_prompt", Class::Conversation),
    ("system_prompt_preview", Class::Conversation),
    ("system_reminders", Class::Conversation),
    ("telemetry.sdk.language", Class::Known),
    ("telemetry.sdk.name", Class::Known),
    ("telemetry.sdk.version", Class::Known),
    ("terminal.type", Class::Known),
    ("tool", Class::ToolDetail),
    ("tool_input", Class::ToolDetail),
    ("tool_input_size_bytes", Class::Known),
    ("tool_name", Class::ToolName),
    ("tool_name_safe", Class::ToolName),
    ("tool_parameters", Class::ToolDetail),
    ("tool_result_size_bytes", Class::Known),
    ("tool_source", Class::Known),
    ("tool_use_id", Class::Known),
    ("total_attempts", Class::Known),
    ("total_retry_duration_ms", Class::Known),
    ("ttft_ms", Class::Known),
    ("type", Class::Known),
    ("user.account_uuid", Class::Identifier),
    ("user.email", Class::Identifier),
    ("user.id", Class::Identifier),
    ("user_prompt", Class::Conversation),
    ("user_prompt_length", Class::Known),
    ("user_system_prompt", Class::Conversation),
    ("vcs.ref.head.name", Class::Known),
    // The plan usage-limit window of the status line's gauges (`five_hour`, `seven_day`, …).
    ("window", Class::Known),
];

fn classify(key: &str, ctx: RecordContext) -> Class {
    // Flags first: most records are neither, and then no string comparison is made here.
    if ctx.survey && key == "response" {
        return Class::Known;
    }
    if ctx.tool && key == "error" {
        return Class::ToolDetail;
    }
    key_table().get(key).unwrap_or(Class::Unknown)
}

/// Slots of [`KeyTable`]: a power of two well above `KEYS.len()`, so a miss (an unknown key)
/// usually ends at the first, empty, slot.
const TABLE_BITS: u32 = 10;

/// [`KEYS`] as an open-addressing hash table: classification runs for every attribute of
/// every request, and a binary search over ~140 keys (7 string comparisons) cost the policy
/// 12 % of the decode + encode time. Here a lookup is two word loads, a multiply and, for keys
/// of at most 16 bytes (most), a comparison of those words with the slot's: no `memcmp`.
struct KeyTable {
    slots: Vec<Slot>,
}

#[derive(Clone, Copy)]
struct Slot {
    head: u64,
    tail: u64,
    len: u32,
    /// Index + 1 into [`KEYS`]; 0 = empty.
    entry: u16,
    class: Class,
}

const EMPTY_SLOT: Slot = Slot {
    head: 0,
    tail: 0,
    len: 0,
    entry: 0,
    class: Class::Unknown,
};

/// A key's first and last 8 bytes as words (overlapping when shorter than 16); a key shorter
/// than 8 bytes packed into `head` (injective for a given length). With the length they
/// determine a key of at most 16 bytes exactly.
fn key_words(key: &[u8]) -> (u64, u64) {
    match (key.first_chunk::<8>(), key.last_chunk::<8>()) {
        // Two fixed-size loads: no copy loop, no memcpy call.
        (Some(head), Some(tail)) => (u64::from_le_bytes(*head), u64::from_le_bytes(*tail)),
        _ => (
            key.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            0,
        ),
    }
}

/// Cheap hash of a key's words and length, Fibonacci-multiplied; collisions only cost a probe.
fn key_hash(words: (u64, u64), len: usize) -> usize {
    let x = words.0 ^ words.1.rotate_left(29) ^ (len as u64);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_BITS)) as usize
}

impl KeyTable {
    fn build() -> KeyTable {
        let mask = (1usize << TABLE_BITS) - 1;
        let mut slots = vec![EMPTY_SLOT; 1 << TABLE_BITS];
        for (i, (key, class)) in KEYS.iter().enumerate() {
            let words = key_words(key.as_bytes());
            let mut at = key_hash(words, key.len());
            while slots[at].entry != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = Slot {
                head: words.0,
                tail: words.1,
                len: key.len() as u32,
                entry: (i + 1) as u16,
                class: *class,
            };
        }
        KeyTable { slots }
    }

    fn get(&self, key: &str) -> Option<Class> {
        let bytes = key.as_bytes();
        let n = bytes.len();
        let words = key_words(bytes);
        let mask = self.slots.len() - 1;
        let mut at = key_hash(words, n);
        loop {
            let slot = self.slots.get(at)?;
            if slot.entry == 0 {
                return None;
            }
            if slot.len as usize == n
                && slot.head == words.0
                && slot.tail == words.1
                && (n <= 16 || {
                    let (k, _) = KEYS.get(usize::from(slot.entry) - 1)?;
                    k.as_bytes().get(8..n - 8) == bytes.get(8..n - 8)
                })
            {
                return Some(slot.class);
            }
            at = (at + 1) & mask;
        }
    }

    /// Where `key` would first be looked for (tests: probe lengths).
    #[cfg(test)]
    fn home(key: &str) -> usize {
        key_hash(key_words(key.as_bytes()), key.len())
    }
}

fn key_table() -> &'static KeyTable {
    static TABLE: std::sync::OnceLock<KeyTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(KeyTable::build)
}

/// The key under which an unknown log body is withheld and allowed
/// (`privacy.allow_attributes = ["log.body"]`).
pub const LOG_BODY_KEY: &str = "log.body";

/// Whether a value holds no text: numbers, booleans, strings that read as a number (claude
/// sends some numbers as strings: `duration_ms = "28"`) or as `true`/`false`, and lists or maps
/// of those. Such a value of an unknown key passes: it cannot carry a prompt or a path.
fn holds_no_text(value: &AnyValue) -> bool {
    match value.value.as_ref() {
        None
        | Some(Value::BoolValue(_))
        | Some(Value::IntValue(_))
        | Some(Value::DoubleValue(_)) => true,
        Some(Value::StringValue(s)) => is_number_or_bool_text(s),
        Some(Value::ArrayValue(a)) => a.values.iter().all(holds_no_text),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter()
            .all(|kv| kv.value.as_ref().is_none_or(holds_no_text)),
        Some(Value::BytesValue(_)) | Some(Value::StringValueStrindex(_)) => false,
    }
}

/// `true`, `false`, or a plain decimal number (`-12`, `0.25`, `1e-3`) of at most 32 bytes;
/// nothing else (no hex, no `inf`, no digit groups that could be a phone number with spaces).
fn is_number_or_bool_text(s: &str) -> bool {
    if s == "true" || s == "false" {
        return true;
    }
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 32 {
        return false;
    }
    let mut i = usize::from(b[0] == b'-');
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let int = digits(&mut i);
    let mut frac = false;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac = digits(&mut i);
    }
    if !(int || frac) {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// A log body claude would send: the constant `claude_code.<event name>` (lower-case letters,
/// digits, `_` and `.`, at most 128 bytes).
fn is_event_name_body(s: &str) -> bool {
    const fn name_bytes() -> [bool; 256] {
        let mut t = [false; 256];
        let mut c = b'a';
        while c <= b'z' {
            t[c as usize] = true;
            c += 1;
        }
        let mut d = b'0';
        while d <= b'9' {
            t[d as usize] = true;
            d += 1;
        }
        t[b'_' as usize] = true;
        t[b'.' as usize] = true;
        t
    }
    // One table load per byte: this runs on every log record.
    static NAME_BYTE: [bool; 256] = name_bytes();
    s.strip_prefix("claude_code.").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 128 && rest.bytes().all(|c| NAME_BYTE[usize::from(c)])
    })
}

/// `privacy.allow_attributes`: exact keys, and prefixes written `prefix*` (`"*"` alone allows
/// every key).
#[derive(Debug, Clone, Default)]
struct AllowList {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AllowList {
    fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut list = AllowList::default();
        for key in keys {
            match key.strip_suffix('*') {
                Some(prefix) => list.prefixes.push(prefix.to_string()),
                None => list.exact.push(key.to_string()),
            }
        }
        list.exact.sort();
        list.exact.dedup();
        list
    }

    fn entries(&self) -> Vec<String> {
        let prefixes = self.prefixes.iter().map(|p| format!("{p}*"));
        self.exact.iter().cloned().chain(prefixes).collect()
    }

    fn allows(&self, key: &str) -> bool {
        self.exact.binary_search_by(|k| k.as_str().cmp(key)).is_ok()
            || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Per-request scratch: pseudonyms already computed (the same `user.id` sits on every point
/// and record, so one HMAC per distinct value is enough) and the unknown keys withheld.
#[derive(Debug, Default)]
pub struct RequestScratch {
    entries: Vec<(String, String)>,
    withheld: Vec<String>,
}

impl RequestScratch {
    fn note_withheld(&mut self, key: &str) {
        if !self.withheld.iter().any(|k| k == key) {
            self.withheld.push(key.to_string());
        }
    }

    /// The unknown keys withheld in this request (names only, never values), in first-seen
    /// order without repeats.
    pub fn into_withheld(self) -> Vec<String> {
        self.withheld
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
    allowed: AllowList,
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
    #[cfg(test)]
    pub fn new(settings: &PrivacySettings, hash_key: &[u8]) -> Result<Self, PrivacyError> {
        Self::with_allowed(settings, hash_key, std::iter::empty())
    }

    /// Like [`Privacy::new`], with more keys allowed than `privacy.allow_attributes` lists: the
    /// `[resource].attributes` keys, whose values the resource stage replaces anyway.
    pub fn with_allowed<'a>(
        settings: &'a PrivacySettings,
        hash_key: &[u8],
        more_allowed: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PrivacyError> {
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
            allowed: AllowList::new(
                settings
                    .allow_attributes
                    .iter()
                    .map(String::as_str)
                    .chain(more_allowed),
            ),
            shared: Arc::default(),
        })
    }

    /// The allowed unknown keys as written (`prefix*` for prefixes).
    pub fn allowed_keys(&self) -> Vec<String> {
        self.allowed.entries()
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
    fn pseudonym_cached<'c>(&self, value: &str, cache: &'c mut RequestScratch) -> Option<&'c str> {
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
        cache: &mut RequestScratch,
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
        cache: &mut RequestScratch,
    ) -> bool {
        match classify(&kv.key, ctx) {
            Class::Identifier => return self.apply_identifier(kv, cache),
            Class::Unknown
                if !kv.value.as_ref().is_none_or(holds_no_text)
                    && !self.allowed.allows(&kv.key) =>
            {
                cache.note_withheld(&kv.key);
                set_marker(kv);
            }
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

    fn apply_identifier(&self, kv: &mut KeyValue, cache: &mut RequestScratch) -> bool {
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

    /// Applies the rules to a log body: claude's constant `claude_code.<name>`, numbers and
    /// booleans pass; any other body (free text from another sender, a structured body) is
    /// withheld as the key [`LOG_BODY_KEY`] unless that key is allowed. What passes is redacted.
    pub fn apply_body(&self, body: &mut AnyValue, cache: &mut RequestScratch) {
        let known = match body.value.as_ref() {
            Some(Value::StringValue(s)) => is_event_name_body(s),
            _ => false,
        };
        if !known && !holds_no_text(body) && !self.allowed.allows(LOG_BODY_KEY) {
            cache.note_withheld(LOG_BODY_KEY);
            *body = string_value(REDACTED.to_string());
            return;
        }
        self.redact_any(body);
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
        p.apply_attributes(attrs, ctx, &mut RequestScratch::default())
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

    fn typed(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn key_table_is_sorted_unique_and_finds_every_key_in_few_probes() {
        for pair in KEYS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        let table = key_table();
        let mask = table.slots.len() - 1;
        for (i, (key, class)) in KEYS.iter().enumerate() {
            assert_eq!(table.get(key), Some(*class), "{key}");
            let home = KeyTable::home(key);
            let at = table
                .slots
                .iter()
                .position(|s| usize::from(s.entry) == i + 1)
                .expect("in the table");
            assert!(
                (at.wrapping_sub(home) & mask) <= 2,
                "{key} is {at} from {home}"
            );
        }
        for unknown in [
            "",
            "x",
            "prompt_text2",
            "gen_ai.usage.input_tokenz",
            "gen_ai.uXage.input_tokens",
            "model ",
            "gen_ai.tool.NAME",
        ] {
            assert_eq!(table.get(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn every_class_is_found_by_its_key() {
        let none = RecordContext::default();
        assert_eq!(classify("prompt_text", none), Class::Conversation);
        assert_eq!(classify("user.id", none), Class::Identifier);
        assert_eq!(classify("bash_argv0", none), Class::ToolDetail);
        assert_eq!(classify("tool_name", none), Class::ToolName);
        assert_eq!(classify("anthropic.provider", none), Class::Known);
        assert_eq!(classify("cache_creation_1h_tokens", none), Class::Known);
        assert_eq!(classify("error", none), Class::Known);
        assert_eq!(
            classify("error", RecordContext { tool: true, ..none }),
            Class::ToolDetail
        );
        assert_eq!(classify("never.seen", none), Class::Unknown);
        assert_eq!(classify("", none), Class::Unknown);
    }

    #[test]
    fn prompt_text_is_conversation_text() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let mut attrs = vec![kv("prompt_text", "fix the bug in billing.rs")];
        let mut scratch = RequestScratch::default();
        p.apply_attributes(&mut attrs, RecordContext::default(), &mut scratch);
        assert_eq!(get(&attrs, "prompt_text"), Some(REDACTED));
        assert!(scratch.into_withheld().is_empty(), "known, not unknown");
    }

    #[test]
    fn unknown_text_is_withheld_and_its_key_noted_but_numbers_and_booleans_pass() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let mut attrs = vec![
            kv("new.summary", "the user is refactoring billing"),
            kv("new.count", "42"),
            kv("new.ratio", "-0.5e3"),
            kv("new.flag", "true"),
            typed("new.int", Value::IntValue(7)),
            typed("new.double", Value::DoubleValue(1.5)),
            typed("new.bool", Value::BoolValue(false)),
            kv("model", "claude-sonnet-4-6"),
            kv("new.summary", "again"),
        ];
        let mut scratch = RequestScratch::default();
        let removed = p.apply_attributes(&mut attrs, RecordContext::default(), &mut scratch);
        assert!(!removed, "withheld, not removed");
        assert_eq!(get(&attrs, "new.summary"), Some(REDACTED));
        assert_eq!(get(&attrs, "new.count"), Some("42"));
        assert_eq!(get(&attrs, "new.ratio"), Some("-0.5e3"));
        assert_eq!(get(&attrs, "new.flag"), Some("true"));
        assert_eq!(get(&attrs, "model"), Some("claude-sonnet-4-6"));
        let v = |k: &str| {
            attrs
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
        };
        assert_eq!(v("new.int").and_then(|v| v.value), Some(Value::IntValue(7)));
        assert_eq!(
            v("new.bool").and_then(|v| v.value),
            Some(Value::BoolValue(false))
        );
        assert_eq!(scratch.into_withheld(), vec!["new.summary".to_string()]);
    }

    #[test]
    fn number_text_is_plain_decimal_only() {
        for yes in ["0", "-12", "3.25", ".5", "1e-3", "7E+2", "true", "false"] {
            assert!(is_number_or_bool_text(yes), "{yes}");
        }
        for no in [
            "",
            "-",
            ".",
            "1e",
            "0x1f",
            "inf",
            "NaN",
            "1 2",
            "+1",
            "12a",
            "True",
            "555 0100",
            "123456789012345678901234567890123",
        ] {
            assert!(!is_number_or_bool_text(no), "{no}");
        }
    }

    #[test]
    fn unknown_lists_and_maps_pass_only_without_text() {
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        let p = privacy(&PrivacySettings::default(), b"k");
        let nums = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::IntValue(1)),
            }],
        });
        let words = Value::KvlistValue(KeyValueList {
            values: vec![kv("inner", "a path /home/ada/secret")],
        });
        let mut attrs = vec![
            typed("new.nums", nums.clone()),
            typed("new.words", words),
            typed("new.bytes", Value::BytesValue(b"raw".to_vec())),
        ];
        let mut scratch = RequestScratch::default();
        p.apply_attributes(&mut attrs, RecordContext::default(), &mut scratch);
        assert_eq!(
            attrs[0].value.as_ref().and_then(|v| v.value.clone()),
            Some(nums)
        );
        assert_eq!(get(&attrs, "new.words"), Some(REDACTED));
        assert_eq!(get(&attrs, "new.bytes"), Some(REDACTED));
        assert_eq!(scratch.into_withheld(), vec!["new.words", "new.bytes"]);
    }

    #[test]
    fn allowed_unknown_keys_pass_with_redaction_and_prefixes_work() {
        let s = PrivacySettings {
            allow_attributes: vec!["new.summary".into(), "plugin_extra.*".into()],
            ..PrivacySettings::default()
        };
        let p = privacy(&s, b"k");
        let mut attrs = vec![
            kv("new.summary", "mail ada@example.com"),
            kv("plugin_extra.note", "kept"),
            kv("new.other", "withheld"),
        ];
        let mut scratch = RequestScratch::default();
        p.apply_attributes(&mut attrs, RecordContext::default(), &mut scratch);
        assert_eq!(get(&attrs, "new.summary"), Some("mail <REDACTED>"));
        assert_eq!(get(&attrs, "plugin_extra.note"), Some("kept"));
        assert_eq!(get(&attrs, "new.other"), Some(REDACTED));
        assert_eq!(scratch.into_withheld(), vec!["new.other"]);
        let all = privacy(
            &PrivacySettings {
                allow_attributes: vec!["*".into()],
                ..PrivacySettings::default()
            },
            b"k",
        );
        let mut attrs = vec![kv("new.other", "sent")];
        apply(&all, &mut attrs, RecordContext::default());
        assert_eq!(get(&attrs, "new.other"), Some("sent"));
    }

    #[test]
    fn log_body_passes_only_as_claudes_constant_unless_allowed() {
        let p = privacy(&PrivacySettings::default(), b"k");
        let mut scratch = RequestScratch::default();
        let mut body = string_value("claude_code.api_request".into());
        p.apply_body(&mut body, &mut scratch);
        assert_eq!(body, string_value("claude_code.api_request".into()));
        let mut body = string_value("claude_code.user said: fix billing".into());
        p.apply_body(&mut body, &mut scratch);
        assert_eq!(body, string_value(REDACTED.into()));
        let mut body = string_value("hook ran for ada".into());
        p.apply_body(&mut body, &mut scratch);
        assert_eq!(body, string_value(REDACTED.into()));
        let mut body = AnyValue {
            value: Some(Value::IntValue(3)),
        };
        p.apply_body(&mut body, &mut scratch);
        assert_eq!(body.value, Some(Value::IntValue(3)));
        assert_eq!(scratch.into_withheld(), vec![LOG_BODY_KEY]);

        let allowed = privacy(
            &PrivacySettings {
                allow_attributes: vec![LOG_BODY_KEY.into()],
                ..PrivacySettings::default()
            },
            b"k",
        );
        let mut scratch = RequestScratch::default();
        let mut body = string_value("hook ran, key sk-ant-api03-SECRETSECRET".into());
        allowed.apply_body(&mut body, &mut scratch);
        assert_eq!(body, string_value("hook ran, key <REDACTED>".into()));
        assert!(scratch.into_withheld().is_empty());
    }
}
