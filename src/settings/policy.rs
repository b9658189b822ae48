//! The `[privacy]`, `[cardinality]` and `[resource]` settings sections, their validation and
//! the managed-policy merge.
//!
//! These structs are the *declared* policy; `relay::policy::Policy` compiles them once at launch
//! into the rules applied to every OTLP request. Validation returns every problem at once, each
//! tagged with a dotted key (`privacy.redact[2]`, `resource.attributes."team.id"`) that the
//! settings loader maps back to `file:line:col`, so a bad file fails before claude starts.
//!
//! Key path format used in [`PolicyIssue::key`] and [`LooseningAttempt::key`]: section and field
//! names joined by `.`, a list element as `[index]`, a table key containing a dot quoted as in
//! TOML (`resource.attributes."team.id"`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The attribute that identifies one claude process; see [`SESSION_ID_REFUSAL`].
pub const SESSION_ID: &str = "session.id";

/// Why `session.id` may never be dropped from metric points; shown verbatim to the user.
pub const SESSION_ID_REFUSAL: &str = "session.id cannot be dropped from metrics: Claude Code sends \
DELTA counters and the collector's delta_to_cumulative keeps one running total per attribute set, \
which needs a single writer per set; without session.id concurrent sessions collide (points \
dropped as out of order, or read as counter resets that inflate totals by orders of magnitude). \
Drop session-constant attributes (app.version, terminal.type, user.email, ...) instead.";

/// The resource attribute stamped per launch; see [`ResourceSettings::service_instance_id`].
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Fewer bytes than this make a team key guessable (and every e-mail pseudonym with it).
pub const MIN_TEAM_KEY_LEN: usize = 16;

/// What happens to a class of free text (conversation, tool details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// Replaced by the marker `<REDACTED>` before the data leaves the machine.
    #[default]
    Drop,
    /// Sent, with the redaction patterns still applied (inside JSON documents too).
    Keep,
}

impl TextMode {
    /// Tightness rank: higher keeps less. Used by the managed-policy merge.
    fn rank(self) -> u8 {
        match self {
            TextMode::Keep => 0,
            TextMode::Drop => 1,
        }
    }

    /// The name as written in a settings file.
    pub fn as_str(self) -> &'static str {
        match self {
            TextMode::Drop => "drop",
            TextMode::Keep => "keep",
        }
    }
}

/// What happens to personal identifiers (`user.email`, `user.account_uuid`, `organization.id`,
/// `user.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierMode {
    /// Replaced by a keyed HMAC-SHA256 pseudonym (128 bits, hex): stable per key, not
    /// reversible.
    #[default]
    Hash,
    /// Sent as claude sent them.
    Keep,
    /// Removed from every attribute list.
    Drop,
}

impl IdentifierMode {
    /// Tightness rank: drop > hash > keep.
    fn rank(self) -> u8 {
        match self {
            IdentifierMode::Keep => 0,
            IdentifierMode::Hash => 1,
            IdentifierMode::Drop => 2,
        }
    }

    /// The name as written in a settings file.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierMode::Hash => "hash",
            IdentifierMode::Keep => "keep",
            IdentifierMode::Drop => "drop",
        }
    }
}

/// `[privacy]`: what conversation text, tool details and identifiers may leave the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct PrivacySettings {
    /// Prompt and response text, raw API bodies, system prompts and the span attributes
    /// carrying the same.
    pub prompts: TextMode,
    /// Tool parameters and input (commands, file paths, file content, MCP and skill names),
    /// tool output on spans.
    pub tool_details: TextMode,
    /// Personal identifiers.
    pub identifiers: IdentifierMode,
    /// Shared HMAC key so one person maps to one pseudonym on every machine of a team; without
    /// it a per-installation secret from the data directory is used.
    pub team_key: Option<String>,
    /// Extra regular expressions; every match in a string attribute value or log body is
    /// replaced by `<REDACTED>`.
    pub redact: Vec<String>,
    /// Built-in patterns for Anthropic API keys, bearer tokens, AWS keys and e-mail addresses.
    pub builtin_redactions: bool,
    /// Attribute keys the relay does not know whose text may leave the machine (exact keys, or
    /// `prefix*`; `"*"` allows every key). Without it an unknown key's text is withheld (fail
    /// closed: a field a new Claude Code release adds may be conversation text); numbers and
    /// booleans pass regardless. `"log.body"` allows log bodies other than claude's constant.
    pub allow_attributes: Vec<String>,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            prompts: TextMode::Drop,
            tool_details: TextMode::Drop,
            identifiers: IdentifierMode::Hash,
            team_key: None,
            redact: Vec::new(),
            builtin_redactions: true,
            allow_attributes: Vec::new(),
        }
    }
}

/// `[cardinality]`: which attributes metric data points may carry.
///
/// Default: drop nothing. Every per-point attribute claude sends is either `session.id` (which
/// must stay), a session-constant one (cheap: it never adds series beyond `session.id`) or a
/// real dimension (`type`, `model`). Teams drop session-constant attributes here to slim
/// series labels; they stay on events.
///
/// Reviewed for 2.1.332 (observed; `docs/claude-code-telemetry.md`): its new point attributes
/// are `anthropic.provider` (`firstParty`, or the cloud provider) and `anthropic.custom_base_url`
/// (a bool), on every point. Both are fixed for a process, hence for a `session.id`: they
/// multiply no series (series = sessions x `type` x `model` x `query_source` x `effort`, as
/// on 2.1.197), and the provider is a dimension teams split cost by. So the default stays
/// "drop nothing"; `drop_metric_attributes = ["anthropic.custom_base_url"]` slims labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct CardinalitySettings {
    /// Attribute keys removed from metric data points; points that become identical are
    /// merged. `session.id` is refused.
    pub drop_metric_attributes: Vec<String>,
}

/// `[resource]`: attributes stamped on every resource the relay forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ResourceSettings {
    /// Extra attributes (`department`, `"team.id"`, ...); they override a value claude sent
    /// for the same key, so a user's `OTEL_RESOURCE_ATTRIBUTES` cannot relabel a team.
    pub attributes: BTreeMap<String, String>,
    /// Add `project.name` (git remote repository name, else directory name) unless present.
    pub project_name: bool,
    /// Add `vcs.ref.head.name` (the checked-out branch) unless present.
    pub git_branch: bool,
    /// Add a per-launch `service.instance.id` unless present: one writer per launch.
    pub service_instance_id: bool,
}

impl Default for ResourceSettings {
    fn default() -> Self {
        ResourceSettings {
            attributes: BTreeMap::new(),
            project_name: true,
            git_branch: false,
            service_instance_id: true,
        }
    }
}

/// The three policy sections together: what the relay compiles and what the managed merge
/// works on. The settings root may embed the sections directly instead.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct PolicySettings {
    /// `[privacy]`.
    pub privacy: PrivacySettings,
    /// `[cardinality]`.
    pub cardinality: CardinalitySettings,
    /// `[resource]`.
    pub resource: ResourceSettings,
}

impl PolicySettings {
    /// Claude Code's own telemetry switches matching this policy, for the launcher to put in
    /// claude's environment (and `--settings` env, which overrides the user's settings files).
    /// Claude then does not produce what the relay would withhold anyway; the relay enforces
    /// the policy regardless. `session.id` stays on metrics whatever the user set, for the
    /// single-writer reason in [`SESSION_ID_REFUSAL`].
    pub fn claude_switches(&self) -> Vec<(&'static str, &'static str)> {
        let mut env = vec![("OTEL_METRICS_INCLUDE_SESSION_ID", "true")];
        if self.privacy.prompts == TextMode::Drop {
            env.push(("OTEL_LOG_USER_PROMPTS", "0"));
            env.push(("OTEL_LOG_RAW_API_BODIES", "0"));
        }
        if self.privacy.tool_details == TextMode::Drop {
            env.push(("OTEL_LOG_TOOL_DETAILS", "0"));
            env.push(("OTEL_LOG_TOOL_CONTENT", "0"));
        }
        if self.privacy.identifiers == IdentifierMode::Drop {
            env.push(("OTEL_METRICS_INCLUDE_ACCOUNT_UUID", "false"));
        }
        env
    }
}

/// One problem in the policy settings, tied to the key a person must fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// Dotted key path, e.g. `privacy.redact[2]`.
    pub key: String,
    /// What is wrong and what to do, in one or two sentences.
    pub message: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Renders one TOML table key as it appears in a key path (quoted when it contains a dot).
pub fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn check_regex(key: String, pattern: &str, issues: &mut Vec<PolicyIssue>) {
    if let Err(e) = regex::Regex::new(pattern) {
        issues.push(PolicyIssue {
            key,
            message: format!("invalid regular expression: {e}"),
        });
    }
}

impl PrivacySettings {
    /// Every problem in `[privacy]`: bad regexes, a guessable team key.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        let mut issues = Vec::new();
        for (i, pattern) in self.redact.iter().enumerate() {
            check_regex(format!("privacy.redact[{i}]"), pattern, &mut issues);
        }
        if let Some(key) = &self.team_key
            && key.len() < MIN_TEAM_KEY_LEN
        {
            issues.push(PolicyIssue {
                key: "privacy.team_key".into(),
                message: format!(
                    "the team key has {} bytes; a key shorter than {MIN_TEAM_KEY_LEN} can be guessed \
                     and every pseudonym reversed by trying candidate e-mails; use 32 or more random \
                     characters (e.g. the output of `openssl rand -hex 32`)",
                    key.len()
                ),
            });
        }
        check_allow_list(
            "privacy.allow_attributes",
            &self.allow_attributes,
            &mut issues,
        );
        issues
    }
}

fn check_allow_list(prefix: &str, keys: &[String], issues: &mut Vec<PolicyIssue>) {
    for (i, key) in keys.iter().enumerate() {
        if key.trim().is_empty() {
            issues.push(PolicyIssue {
                key: format!("{prefix}[{i}]"),
                message: "empty attribute name".into(),
            });
        } else if key.strip_suffix('*').unwrap_or(key).contains('*') {
            issues.push(PolicyIssue {
                key: format!("{prefix}[{i}]"),
                message: format!(
                    "{key:?}: `*` may only end a key (a prefix such as \"plugin.*\"); \
                     write each key or one prefix"
                ),
            });
        }
    }
}

/// Whether the allow list `list` covers `key` (an exact entry or a `prefix*` one).
fn allow_list_covers(list: &[String], key: &str) -> bool {
    list.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => entry == key,
    })
}

fn check_metric_attribute_list(prefix: &str, keys: &[String], issues: &mut Vec<PolicyIssue>) {
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        if key == SESSION_ID {
            issues.push(PolicyIssue {
                key: path,
                message: SESSION_ID_REFUSAL.into(),
            });
        } else if key.trim().is_empty() {
            issues.push(PolicyIssue {
                key: path,
                message: "empty attribute name".into(),
            });
        }
    }
}

impl CardinalitySettings {
    /// Every problem in `[cardinality]`: above all, a rule that removes `session.id`.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        let mut issues = Vec::new();
        check_metric_attribute_list(
            "cardinality.drop_metric_attributes",
            &self.drop_metric_attributes,
            &mut issues,
        );
        issues
    }
}

fn check_resource_attributes(attrs: &BTreeMap<String, String>, issues: &mut Vec<PolicyIssue>) {
    for key in attrs.keys() {
        let path = format!("resource.attributes.{}", key_segment(key));
        if key.trim().is_empty() {
            issues.push(PolicyIssue {
                key: path,
                message: "empty attribute name".into(),
            });
        } else if key == SERVICE_INSTANCE_ID {
            issues.push(PolicyIssue {
                key: path,
                message:
                    "service.instance.id is stamped per launch (resource.service_instance_id); \
                          a fixed value would make every launch one writer and their delta \
                          counters collide"
                        .into(),
            });
        }
    }
}

impl ResourceSettings {
    /// Every problem in `[resource]`.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        let mut issues = Vec::new();
        check_resource_attributes(&self.attributes, &mut issues);
        issues
    }
}

impl PolicySettings {
    /// Every problem in the three sections, in section order.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        let mut issues = self.privacy.validate();
        issues.extend(self.cardinality.validate());
        issues.extend(self.resource.validate());
        issues
    }
}

/// `[privacy]` of the managed (administrator) policy file: every key present is locked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ManagedPrivacy {
    /// Floor for `privacy.prompts`.
    pub prompts: Option<TextMode>,
    /// Floor for `privacy.tool_details`.
    pub tool_details: Option<TextMode>,
    /// Floor for `privacy.identifiers`.
    pub identifiers: Option<IdentifierMode>,
    /// The team key, imposed as is.
    pub team_key: Option<String>,
    /// Patterns always applied; user patterns are added to them.
    pub redact: Option<Vec<String>>,
    /// When `true`, built-in patterns cannot be switched off.
    pub builtin_redactions: Option<bool>,
    /// The most unknown attribute keys users may allow: present, it is the allow list unless
    /// the user lists fewer (an entry the managed list does not cover is reported and ignored).
    pub allow_attributes: Option<Vec<String>>,
}

/// `[cardinality]` of the managed policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ManagedCardinality {
    /// Attributes always dropped from metric points; user drops are added to them.
    pub drop_metric_attributes: Option<Vec<String>>,
}

/// `[resource]` of the managed policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ManagedResource {
    /// Attributes imposed as is; users may add other keys but not change these.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Locks `resource.project_name`.
    pub project_name: Option<bool>,
    /// Locks `resource.git_branch`.
    pub git_branch: Option<bool>,
    /// Locks `resource.service_instance_id`.
    pub service_instance_id: Option<bool>,
}

/// The policy sections of the administrator's file (e.g. `/etc/claude-telemetry/policy.toml`).
/// Only keys present are locked; absent keys leave the user free.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ManagedPolicy {
    /// `[privacy]`.
    pub privacy: ManagedPrivacy,
    /// `[cardinality]`.
    pub cardinality: ManagedCardinality,
    /// `[resource]`.
    pub resource: ManagedResource,
    /// `[budget]`: team budgets, each a ceiling a user or project may only lower.
    pub budget: super::budget::BudgetSettings,
}

impl ManagedPolicy {
    /// The dotted keys this file locks, for `config` ("locked by <path>").
    pub fn locked_keys(&self) -> Vec<String> {
        let p = &self.privacy;
        let r = &self.resource;
        let mut keys = Vec::new();
        let mut add = |present: bool, key: &str| {
            if present {
                keys.push(key.to_string());
            }
        };
        add(p.prompts.is_some(), "privacy.prompts");
        add(p.tool_details.is_some(), "privacy.tool_details");
        add(p.identifiers.is_some(), "privacy.identifiers");
        add(p.team_key.is_some(), "privacy.team_key");
        add(p.redact.is_some(), "privacy.redact");
        add(p.builtin_redactions.is_some(), "privacy.builtin_redactions");
        add(p.allow_attributes.is_some(), "privacy.allow_attributes");
        add(
            self.cardinality.drop_metric_attributes.is_some(),
            "cardinality.drop_metric_attributes",
        );
        add(r.project_name.is_some(), "resource.project_name");
        add(r.git_branch.is_some(), "resource.git_branch");
        add(
            r.service_instance_id.is_some(),
            "resource.service_instance_id",
        );
        for key in r.attributes.iter().flat_map(|a| a.keys()) {
            keys.push(format!("resource.attributes.{}", key_segment(key)));
        }
        keys.extend(self.budget.set_keys());
        keys
    }

    /// The same checks as [`PolicySettings::validate`], on the keys present.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        let mut issues = Vec::new();
        for (i, pattern) in self.privacy.redact.iter().flatten().enumerate() {
            check_regex(format!("privacy.redact[{i}]"), pattern, &mut issues);
        }
        if let Some(key) = &self.privacy.team_key {
            let probe = PrivacySettings {
                team_key: Some(key.clone()),
                ..PrivacySettings::default()
            };
            issues.extend(probe.validate());
        }
        if let Some(keys) = &self.privacy.allow_attributes {
            check_allow_list("privacy.allow_attributes", keys, &mut issues);
        }
        if let Some(keys) = &self.cardinality.drop_metric_attributes {
            check_metric_attribute_list("cardinality.drop_metric_attributes", keys, &mut issues);
        }
        if let Some(attrs) = &self.resource.attributes {
            check_resource_attributes(attrs, &mut issues);
        }
        issues.extend(self.budget.validate());
        issues
    }
}

/// A user or project setting that tried to loosen a locked value; reported by `config` and at
/// launch, never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseningAttempt {
    /// Dotted key path.
    pub key: String,
    /// What the user's settings asked for (secrets shown as `<a different key>`).
    pub wanted: String,
    /// The managed value that applies instead.
    pub locked: String,
}

/// The outcome of [`merge_managed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedPolicy {
    /// What the relay enforces.
    pub effective: PolicySettings,
    /// Every loosening attempt, in key order of the sections.
    pub loosening: Vec<LooseningAttempt>,
}

/// Computes the effective policy from the managed file and the user's effective values (all
/// layers below the managed file merged). The user may only tighten:
/// `prompts`/`tool_details`: drop beats keep; `identifiers`: drop beats hash beats keep;
/// `builtin_redactions`: true beats false; `allow_attributes`: the managed list, or the user's
/// entries it covers; `redact` and `drop_metric_attributes` are unions
/// (never containing `session.id`); `team_key`, the resource switches and the managed resource
/// attributes are imposed as written.
///
/// `user_set(key)` tells whether a non-default layer set `key` (dotted path as in
/// [`ManagedPolicy::locked_keys`]); only such keys are reported as loosening attempts, so a
/// default value that differs from a managed one is not blamed on the user.
pub fn merge_managed(
    managed: &ManagedPolicy,
    user: &PolicySettings,
    user_set: &dyn Fn(&str) -> bool,
) -> MergedPolicy {
    let mut eff = user.clone();
    let mut loosening = Vec::new();
    let mut report = |key: &str, wanted: String, locked: String| {
        if user_set(key) {
            loosening.push(LooseningAttempt {
                key: key.to_string(),
                wanted,
                locked,
            });
        }
    };
    let mp = &managed.privacy;

    if let Some(locked) = mp.prompts
        && user.privacy.prompts.rank() < locked.rank()
    {
        report(
            "privacy.prompts",
            user.privacy.prompts.as_str().into(),
            locked.as_str().into(),
        );
        eff.privacy.prompts = locked;
    }
    if let Some(locked) = mp.tool_details
        && user.privacy.tool_details.rank() < locked.rank()
    {
        report(
            "privacy.tool_details",
            user.privacy.tool_details.as_str().into(),
            locked.as_str().into(),
        );
        eff.privacy.tool_details = locked;
    }
    if let Some(locked) = mp.identifiers
        && user.privacy.identifiers.rank() < locked.rank()
    {
        report(
            "privacy.identifiers",
            user.privacy.identifiers.as_str().into(),
            locked.as_str().into(),
        );
        eff.privacy.identifiers = locked;
    }
    if let Some(locked) = &mp.team_key {
        if user.privacy.team_key.as_ref().is_some_and(|k| k != locked) {
            report(
                "privacy.team_key",
                "<a different key>".into(),
                "<the managed key>".into(),
            );
        }
        eff.privacy.team_key = Some(locked.clone());
    }
    if let Some(locked) = &mp.redact {
        let mut union = locked.clone();
        for pattern in &user.privacy.redact {
            if !union.contains(pattern) {
                union.push(pattern.clone());
            }
        }
        eff.privacy.redact = union;
    }
    if mp.builtin_redactions == Some(true) && !user.privacy.builtin_redactions {
        report("privacy.builtin_redactions", "false".into(), "true".into());
        eff.privacy.builtin_redactions = true;
    }
    if let Some(locked) = &mp.allow_attributes {
        if user_set("privacy.allow_attributes") {
            // The user may allow fewer keys than the managed list, never others.
            let mut kept = Vec::new();
            for key in &user.privacy.allow_attributes {
                if allow_list_covers(locked, key) {
                    kept.push(key.clone());
                } else {
                    report(
                        "privacy.allow_attributes",
                        format!("{key:?}"),
                        format!("{locked:?}"),
                    );
                }
            }
            eff.privacy.allow_attributes = kept;
        } else {
            eff.privacy.allow_attributes = locked.clone();
        }
    }

    if let Some(locked) = &managed.cardinality.drop_metric_attributes {
        let mut union: Vec<String> = locked.clone();
        for key in &user.cardinality.drop_metric_attributes {
            if !union.contains(key) {
                union.push(key.clone());
            }
        }
        eff.cardinality.drop_metric_attributes = union;
    }
    eff.cardinality
        .drop_metric_attributes
        .retain(|k| k != SESSION_ID);

    let mr = &managed.resource;
    let switches = [
        (
            "resource.project_name",
            mr.project_name,
            &mut eff.resource.project_name,
        ),
        (
            "resource.git_branch",
            mr.git_branch,
            &mut eff.resource.git_branch,
        ),
        (
            "resource.service_instance_id",
            mr.service_instance_id,
            &mut eff.resource.service_instance_id,
        ),
    ];
    for (key, locked, value) in switches {
        if let Some(locked) = locked
            && *value != locked
        {
            report(key, value.to_string(), locked.to_string());
            *value = locked;
        }
    }
    if let Some(locked) = &mr.attributes {
        for (key, value) in locked {
            let path = format!("resource.attributes.{}", key_segment(key));
            if let Some(wanted) = user.resource.attributes.get(key)
                && wanted != value
            {
                report(&path, wanted.clone(), value.clone());
            }
            eff.resource.attributes.insert(key.clone(), value.clone());
        }
    }

    MergedPolicy {
        effective: eff,
        loosening,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicySettings, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_drop_text_hash_identifiers_and_stamp_project_and_instance() {
        let p = PolicySettings::default();
        assert_eq!(p.privacy.prompts, TextMode::Drop);
        assert_eq!(p.privacy.tool_details, TextMode::Drop);
        assert_eq!(p.privacy.identifiers, IdentifierMode::Hash);
        assert!(p.privacy.builtin_redactions);
        assert!(p.cardinality.drop_metric_attributes.is_empty());
        assert!(p.resource.project_name);
        assert!(!p.resource.git_branch);
        assert!(p.resource.service_instance_id);
        assert!(p.validate().is_empty());
        assert_eq!(parse("").expect("empty file parses"), p);
    }

    #[test]
    fn claude_switches_follow_the_policy_and_always_keep_session_id() {
        let env = PolicySettings::default().claude_switches();
        assert!(env.contains(&("OTEL_METRICS_INCLUDE_SESSION_ID", "true")));
        assert!(env.contains(&("OTEL_LOG_USER_PROMPTS", "0")));
        assert!(env.contains(&("OTEL_LOG_TOOL_DETAILS", "0")));
        assert!(
            !env.iter()
                .any(|(k, _)| *k == "OTEL_METRICS_INCLUDE_ACCOUNT_UUID")
        );
        let mut keep = PolicySettings::default();
        keep.privacy.prompts = TextMode::Keep;
        keep.privacy.tool_details = TextMode::Keep;
        keep.privacy.identifiers = IdentifierMode::Drop;
        let env = keep.claude_switches();
        assert!(!env.iter().any(|(k, _)| k.starts_with("OTEL_LOG_")));
        assert!(env.contains(&("OTEL_METRICS_INCLUDE_SESSION_ID", "true")));
        assert!(env.contains(&("OTEL_METRICS_INCLUDE_ACCOUNT_UUID", "false")));
    }

    #[test]
    fn full_example_parses() {
        let p = parse(
            r#"
            [privacy]
            prompts = "keep"
            tool_details = "drop"
            identifiers = "drop"
            team_key = "0123456789abcdef0123456789abcdef"
            redact = ['ticket-\d+']
            builtin_redactions = false
            [cardinality]
            drop_metric_attributes = ["app.version", "terminal.type"]
            [resource]
            git_branch = true
            [resource.attributes]
            department = "engineering"
            "team.id" = "platform"
            "#,
        )
        .expect("example parses");
        assert_eq!(p.privacy.prompts, TextMode::Keep);
        assert_eq!(p.privacy.identifiers, IdentifierMode::Drop);
        assert_eq!(p.resource.attributes["team.id"], "platform");
        assert!(p.resource.git_branch && p.resource.project_name);
        assert!(p.validate().is_empty());
    }

    #[test]
    fn unknown_mode_and_unknown_key_are_parse_errors_with_a_span() {
        let err = parse("[privacy]\nprompts = \"maybe\"\n").expect_err("unknown mode");
        assert!(err.to_string().contains("maybe"), "{err}");
        assert!(err.span().is_some());
        let err = parse("[privacy]\nprompt = \"drop\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("prompt"), "{err}");
    }

    #[test]
    fn bad_regex_is_reported_with_its_index() {
        let mut p = PolicySettings::default();
        p.privacy.redact = vec!["ok".into(), "fine".into(), "(unclosed".into()];
        let issues = p.validate();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "privacy.redact[2]");
        assert!(issues[0].message.contains("invalid regular expression"));
    }

    #[test]
    fn session_id_removal_is_refused_with_the_reason() {
        let mut p = PolicySettings::default();
        p.cardinality.drop_metric_attributes = vec!["app.version".into(), "session.id".into()];
        let issues = p.validate();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "cardinality.drop_metric_attributes[1]");
        assert!(issues[0].message.contains("delta_to_cumulative"));
        assert!(issues[0].message.contains("single writer"));
    }

    #[test]
    fn short_team_key_and_fixed_instance_id_are_refused() {
        let mut p = PolicySettings::default();
        p.privacy.team_key = Some("short".into());
        p.resource
            .attributes
            .insert("service.instance.id".into(), "x".into());
        let keys: Vec<String> = p.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            vec![
                "privacy.team_key".to_string(),
                "resource.attributes.\"service.instance.id\"".to_string()
            ]
        );
    }

    fn everything_set(_: &str) -> bool {
        true
    }

    #[test]
    fn user_keep_under_managed_drop_still_drops_and_is_reported() {
        let managed: ManagedPolicy =
            toml::from_str("[privacy]\nprompts = \"drop\"\n").expect("managed parses");
        let mut user = PolicySettings::default();
        user.privacy.prompts = TextMode::Keep;
        let merged = merge_managed(&managed, &user, &everything_set);
        assert_eq!(merged.effective.privacy.prompts, TextMode::Drop);
        assert_eq!(
            merged.loosening,
            vec![LooseningAttempt {
                key: "privacy.prompts".into(),
                wanted: "keep".into(),
                locked: "drop".into()
            }]
        );
        assert_eq!(managed.locked_keys(), vec!["privacy.prompts".to_string()]);
    }

    #[test]
    fn user_may_tighten_below_a_managed_value() {
        let managed = ManagedPolicy {
            privacy: ManagedPrivacy {
                prompts: Some(TextMode::Keep),
                identifiers: Some(IdentifierMode::Hash),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut user = PolicySettings::default();
        user.privacy.prompts = TextMode::Drop;
        user.privacy.identifiers = IdentifierMode::Drop;
        let merged = merge_managed(&managed, &user, &everything_set);
        assert_eq!(merged.effective.privacy.prompts, TextMode::Drop);
        assert_eq!(merged.effective.privacy.identifiers, IdentifierMode::Drop);
        assert!(merged.loosening.is_empty());
    }

    #[test]
    fn identifiers_order_is_drop_then_hash_then_keep() {
        let managed = ManagedPolicy {
            privacy: ManagedPrivacy {
                identifiers: Some(IdentifierMode::Hash),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut user = PolicySettings::default();
        user.privacy.identifiers = IdentifierMode::Keep;
        let merged = merge_managed(&managed, &user, &everything_set);
        assert_eq!(merged.effective.privacy.identifiers, IdentifierMode::Hash);
        assert_eq!(merged.loosening[0].wanted, "keep");
        assert_eq!(merged.loosening[0].locked, "hash");
    }

    #[test]
    fn lists_are_unions_and_never_contain_session_id() {
        let managed = ManagedPolicy {
            privacy: ManagedPrivacy {
                redact: Some(vec!["corp-\\d+".into()]),
                ..Default::default()
            },
            cardinality: ManagedCardinality {
                drop_metric_attributes: Some(vec!["app.version".into()]),
            },
            ..Default::default()
        };
        let mut user = PolicySettings::default();
        user.privacy.redact = vec!["mine".into(), "corp-\\d+".into()];
        user.cardinality.drop_metric_attributes = vec!["terminal.type".into(), "session.id".into()];
        let merged = merge_managed(&managed, &user, &everything_set);
        assert_eq!(merged.effective.privacy.redact, vec!["corp-\\d+", "mine"]);
        assert_eq!(
            merged.effective.cardinality.drop_metric_attributes,
            vec!["app.version", "terminal.type"]
        );
    }

    #[test]
    fn defaults_differing_from_managed_values_are_not_blamed_on_the_user() {
        let managed = ManagedPolicy {
            resource: ManagedResource {
                git_branch: Some(true),
                ..Default::default()
            },
            privacy: ManagedPrivacy {
                builtin_redactions: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = merge_managed(&managed, &PolicySettings::default(), &|_| false);
        assert!(merged.effective.resource.git_branch);
        assert!(merged.loosening.is_empty());
        let mut user = PolicySettings::default();
        user.privacy.builtin_redactions = false;
        let merged = merge_managed(&managed, &user, &|k| k == "privacy.builtin_redactions");
        assert!(merged.effective.privacy.builtin_redactions);
        assert_eq!(merged.loosening.len(), 1);
        assert_eq!(merged.loosening[0].key, "privacy.builtin_redactions");
    }

    #[test]
    fn managed_team_key_and_resource_attributes_are_imposed_without_leaking_keys() {
        let managed = ManagedPolicy {
            privacy: ManagedPrivacy {
                team_key: Some("managed-key-0123456789".into()),
                ..Default::default()
            },
            resource: ManagedResource {
                attributes: Some(BTreeMap::from([("team.id".into(), "platform".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut user = PolicySettings::default();
        user.privacy.team_key = Some("users-own-key-0123456789".into());
        user.resource
            .attributes
            .insert("team.id".into(), "rogue".into());
        user.resource.attributes.insert("desk".into(), "7".into());
        let merged = merge_managed(&managed, &user, &everything_set);
        let eff = &merged.effective;
        assert_eq!(
            eff.privacy.team_key.as_deref(),
            Some("managed-key-0123456789")
        );
        assert_eq!(eff.resource.attributes["team.id"], "platform");
        assert_eq!(eff.resource.attributes["desk"], "7");
        let keys: Vec<&str> = merged.loosening.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["privacy.team_key", "resource.attributes.\"team.id\""]
        );
        let shown = format!("{:?}", merged.loosening);
        assert!(!shown.contains("users-own-key") && !shown.contains("managed-key-0"));
    }

    #[test]
    fn managed_file_is_validated_like_user_settings() {
        let managed: ManagedPolicy = toml::from_str(
            "[privacy]\nredact = ['(']\n[cardinality]\ndrop_metric_attributes = ['session.id']\n",
        )
        .expect("managed parses");
        let keys: Vec<String> = managed.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            vec!["privacy.redact[0]", "cardinality.drop_metric_attributes[0]"]
        );
    }

    #[test]
    fn managed_allow_list_caps_what_users_may_allow() {
        let managed = ManagedPolicy {
            privacy: ManagedPrivacy {
                allow_attributes: Some(vec!["plugin_extra.*".into(), "team.note".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = merge_managed(&managed, &PolicySettings::default(), &|_| false);
        assert_eq!(
            merged.effective.privacy.allow_attributes,
            vec!["plugin_extra.*", "team.note"],
            "the managed list applies when the user sets none"
        );
        let mut user = PolicySettings::default();
        user.privacy.allow_attributes = vec!["plugin_extra.a".into(), "*".into()];
        let merged = merge_managed(&managed, &user, &everything_set);
        assert_eq!(
            merged.effective.privacy.allow_attributes,
            vec!["plugin_extra.a"]
        );
        assert_eq!(merged.loosening.len(), 1);
        assert_eq!(merged.loosening[0].key, "privacy.allow_attributes");
        assert_eq!(merged.loosening[0].wanted, "\"*\"");
        assert!(
            managed
                .locked_keys()
                .contains(&"privacy.allow_attributes".to_string())
        );
    }

    #[test]
    fn allow_list_entries_are_checked() {
        let mut p = PolicySettings::default();
        p.privacy.allow_attributes = vec!["ok".into(), " ".into(), "a*b".into(), "pre.*".into()];
        let keys: Vec<String> = p.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            vec!["privacy.allow_attributes[1]", "privacy.allow_attributes[2]"]
        );
        let parsed = parse("[privacy]\nallow_attributes = [\"x.y\"]\n").expect("parses");
        assert_eq!(parsed.privacy.allow_attributes, vec!["x.y"]);
    }
}
