//! One line of a Claude Code transcript (`projects/<dir>/<session>.jsonl`) into a usage record.
//!
//! The format is Claude Code's own, undocumented and changing between releases, so only the
//! fields the ledger needs are read (borrowed where the text has no escapes, everything else
//! skipped unparsed) and nothing else is assumed. An assistant line carries the API response's
//! `message` (its `id`, `model`, `usage`), the `requestId` of the HTTP call, `sessionId`, `cwd`,
//! `gitBranch` and `timestamp`. Claude writes one such line per content block of a response
//! (text, tool use, …), each repeating the usage, so the caller de-duplicates by
//! (message id, request id).

use std::borrow::Cow;

use serde::Deserialize;

use crate::store::ledger::{Record, Source, Tokens};

/// Why a line gave no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A line of another kind (user turn, summary, system note, …): nothing to count.
    Other,
    /// An assistant line Claude Code made up itself (model `<synthetic>`, e.g. an error shown
    /// as a reply): no API request behind it.
    Synthetic,
    /// Not JSON, or JSON whose usage fields have the wrong type; the text says what.
    Malformed(String),
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(rename = "requestId", borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(rename = "sessionId", borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cwd: Option<Cow<'a, str>>,
    #[serde(rename = "gitBranch", borrow, default)]
    git_branch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// The bytes every line with usage contains; lines without them are not parsed at all (user
/// turns with large tool results are most of a transcript's bytes).
const USAGE_MARK: &[u8] = b"\"usage\"";

/// Parses one line (without its newline). `file_key` makes the key of a record that has
/// neither a request id nor a message id unique and stable across re-reads.
pub fn parse(line: &[u8], file_key: &str) -> Result<Record, Skip> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_MARK));
    if FINDER.find(line).is_none() {
        // Still reject what is plainly not a JSON object, so damage is counted.
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return Err(Skip::Other);
        }
        if trimmed.first() != Some(&b'{') || trimmed.last() != Some(&b'}') {
            return Err(Skip::Malformed("not a JSON object".to_owned()));
        }
        return Err(Skip::Other);
    }
    let parsed: Line<'_> =
        serde_json::from_slice(line).map_err(|e| Skip::Malformed(e.to_string()))?;
    if parsed.kind.as_deref() != Some("assistant") {
        return Err(Skip::Other);
    }
    let Some(message) = parsed.message else {
        return Err(Skip::Other);
    };
    let Some(usage) = message.usage else {
        return Err(Skip::Other);
    };
    let model = message.model.as_deref().unwrap_or("");
    if model == "<synthetic>" {
        return Err(Skip::Synthetic);
    }
    let Some(time_ns) = parsed
        .timestamp
        .as_deref()
        .and_then(crate::store::parse_rfc3339_utc)
    else {
        return Err(Skip::Malformed(
            "assistant line without a valid `timestamp`".to_owned(),
        ));
    };
    let cache_creation = usage.cache_creation_input_tokens.unwrap_or(0);
    let split = usage.cache_creation.as_ref();
    let tokens = Tokens {
        input: usage.input_tokens.unwrap_or(0),
        output: usage.output_tokens.unwrap_or(0),
        cache_read: usage.cache_read_input_tokens.unwrap_or(0),
        cache_creation,
        cache_5m: split.and_then(|s| s.ephemeral_5m_input_tokens),
        cache_1h: split.and_then(|s| s.ephemeral_1h_input_tokens),
    };
    let key = match (parsed.request_id.as_deref(), message.id.as_deref()) {
        (Some(r), _) if !r.is_empty() => r.to_owned(),
        (_, Some(m)) if !m.is_empty() => format!("msg:{m}"),
        _ => format!(
            "line:{file_key}:{}:{}",
            parsed.timestamp.as_deref().unwrap_or(""),
            tokens.total()
        ),
    };
    Ok(Record {
        key,
        time_ns,
        session: parsed.session_id.map(Cow::into_owned).unwrap_or_default(),
        model: model.to_owned(),
        project: parsed.cwd.as_deref().map(project_of).unwrap_or_default(),
        branch: parsed
            .git_branch
            .filter(|b| !b.is_empty())
            .map(Cow::into_owned),
        tokens,
        cost_usd: None,
        source: Source::Transcript,
    })
}

/// The project a working directory belongs to: its last component, as the relay names a
/// project without a git remote (`project.name`), so imported and relayed rows group together.
pub fn project_of(cwd: &str) -> String {
    cwd.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"parentUuid":"a","cwd":"/home/u/work/shop","sessionId":"s-1","version":"2.1.197","gitBranch":"main","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"hi \"there\""}],"usage":{"input_tokens":10,"cache_creation_input_tokens":30,"cache_read_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":10},"output_tokens":7}},"requestId":"req_1","type":"assistant","uuid":"u","timestamp":"2026-11-30T10:00:00.500Z"}"#;

    #[test]
    fn an_assistant_line_gives_its_usage_keyed_by_request_id() {
        let r = parse(LINE.as_bytes(), "f").unwrap();
        assert_eq!(r.key, "req_1");
        assert_eq!(r.session, "s-1");
        assert_eq!(r.project, "shop");
        assert_eq!(r.branch.as_deref(), Some("main"));
        assert_eq!(r.model, "claude-sonnet-4-6");
        assert_eq!(
            (r.tokens.input, r.tokens.output, r.tokens.cache_read),
            (10, 7, 5)
        );
        assert_eq!(r.tokens.cache_creation, 30);
        assert_eq!((r.tokens.cache_5m, r.tokens.cache_1h), (Some(20), Some(10)));
        assert_eq!(r.time_ns % 1_000_000_000, 500_000_000);
    }

    #[test]
    fn lines_without_usage_are_other_and_garbage_is_malformed() {
        let user = r#"{"type":"user","message":{"role":"user","content":"x"}}"#;
        assert_eq!(parse(user.as_bytes(), "f").unwrap_err(), Skip::Other);
        assert!(matches!(
            parse(b"{\"type\":\"assistant\",\"usage\": ", "f"),
            Err(Skip::Malformed(_))
        ));
        assert!(matches!(parse(b"garbage", "f"), Err(Skip::Malformed(_))));
        let wrong = r#"{"type":"assistant","timestamp":"2026-11-30T10:00:00Z","message":{"usage":{"input_tokens":"many"}}}"#;
        assert!(matches!(
            parse(wrong.as_bytes(), "f"),
            Err(Skip::Malformed(_))
        ));
    }

    #[test]
    fn synthetic_replies_are_no_requests_and_missing_ids_fall_back() {
        let synthetic = LINE.replace("claude-sonnet-4-6", "<synthetic>");
        assert_eq!(
            parse(synthetic.as_bytes(), "f").unwrap_err(),
            Skip::Synthetic
        );
        let no_request = LINE.replace(r#""requestId":"req_1","#, "");
        assert_eq!(parse(no_request.as_bytes(), "f").unwrap().key, "msg:msg_1");
    }
}
