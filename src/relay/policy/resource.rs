//! Resource rules: team attributes, project, branch and the per-launch writer id stamped on
//! every resource the relay forwards.
//!
//! Precedence: `[resource].attributes` override what claude sent (a user's
//! `OTEL_RESOURCE_ATTRIBUTES` cannot relabel a team); `project.name`, `vcs.ref.head.name` (the
//! OpenTelemetry semantic-convention name for the checked-out branch) and
//! `service.instance.id` are added only when absent. Everything else claude sent is kept.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::secret::random_bytes;
use crate::settings::policy::{ResourceSettings, SERVICE_INSTANCE_ID};

/// Resource attribute carrying the project name (no semantic convention exists for it).
pub const PROJECT_NAME: &str = "project.name";
/// Semantic-convention attribute for the checked-out branch.
pub const GIT_BRANCH: &str = "vcs.ref.head.name";

/// The compiled `[resource]` section with the launch's values filled in.
#[derive(Debug, Clone, Default)]
pub struct ResourceStamp {
    overrides: Vec<(String, String)>,
    defaults: Vec<(String, String)>,
}

impl ResourceStamp {
    /// Compiles the section; `None` values (no project detected, switch off) add nothing.
    pub fn new(
        settings: &ResourceSettings,
        project_name: Option<&str>,
        git_branch: Option<&str>,
        service_instance_id: Option<&str>,
    ) -> Self {
        let overrides: Vec<(String, String)> = settings
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut defaults = Vec::new();
        let mut add = |enabled: bool, key: &str, value: Option<&str>| {
            if let (true, Some(v)) = (enabled, value)
                && !settings.attributes.contains_key(key)
            {
                defaults.push((key.to_string(), v.to_string()));
            }
        };
        add(settings.project_name, PROJECT_NAME, project_name);
        add(settings.git_branch, GIT_BRANCH, git_branch);
        add(
            settings.service_instance_id,
            SERVICE_INSTANCE_ID,
            service_instance_id,
        );
        ResourceStamp {
            overrides,
            defaults,
        }
    }

    /// Whether stamping changes nothing (pass-through fast path).
    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty() && self.defaults.is_empty()
    }

    /// Enforces the `[resource].attributes` values on a record's own attributes where claude
    /// copied the resource onto them (it copies `OTEL_RESOURCE_ATTRIBUTES` to every metric
    /// point and event), so a user's `team.id` cannot survive there either. Keys absent from
    /// the record are not added. Returns whether a value changed.
    pub fn override_attributes(&self, attrs: &mut [KeyValue]) -> bool {
        let mut changed = false;
        if self.overrides.is_empty() {
            return changed;
        }
        for kv in attrs.iter_mut() {
            if let Some((_, value)) = self.overrides.iter().find(|(k, _)| *k == kv.key) {
                let wanted = Some(string_value(value));
                if kv.value != wanted {
                    kv.value = wanted;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Stamps one resource, creating it when the sender sent none.
    pub fn apply(&self, resource: &mut Option<Resource>) {
        if self.is_empty() {
            return;
        }
        let attrs = &mut resource.get_or_insert_with(Resource::default).attributes;
        for (key, value) in &self.overrides {
            match attrs.iter_mut().find(|kv| &kv.key == key) {
                Some(kv) => kv.value = Some(string_value(value)),
                None => attrs.push(key_value(key, value)),
            }
        }
        for (key, value) in &self.defaults {
            if !attrs.iter().any(|kv| &kv.key == key) {
                attrs.push(key_value(key, value));
            }
        }
    }
}

fn string_value(value: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(value.to_string())),
    }
}

fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

/// A fresh random (version 4) UUID for `service.instance.id`: one writer per launch.
pub fn new_service_instance_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn get(resource: &Option<Resource>, key: &str) -> Option<String> {
        resource
            .as_ref()?
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    }

    fn claude_resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![
                key_value("service.name", "claude-code"),
                key_value("team.id", "users-choice"),
                key_value("project.name", "from-claude-env"),
            ],
            ..Default::default()
        })
    }

    #[test]
    fn team_attributes_override_and_automatic_ones_fill_gaps() {
        let settings = ResourceSettings {
            attributes: BTreeMap::from([
                ("team.id".into(), "platform".into()),
                ("department".into(), "engineering".into()),
            ]),
            git_branch: true,
            ..ResourceSettings::default()
        };
        let stamp = ResourceStamp::new(&settings, Some("billing-api"), Some("main"), Some("i-1"));
        let mut r = claude_resource();
        stamp.apply(&mut r);
        assert_eq!(get(&r, "service.name").as_deref(), Some("claude-code"));
        assert_eq!(get(&r, "team.id").as_deref(), Some("platform"));
        assert_eq!(get(&r, "department").as_deref(), Some("engineering"));
        assert_eq!(get(&r, "project.name").as_deref(), Some("from-claude-env"));
        assert_eq!(get(&r, GIT_BRANCH).as_deref(), Some("main"));
        assert_eq!(get(&r, SERVICE_INSTANCE_ID).as_deref(), Some("i-1"));
    }

    #[test]
    fn team_attributes_copied_onto_records_are_overridden_but_not_added() {
        let settings = ResourceSettings {
            attributes: BTreeMap::from([("team.id".into(), "platform".into())]),
            ..ResourceSettings::default()
        };
        let stamp = ResourceStamp::new(&settings, None, None, None);
        let mut copied = vec![key_value("team.id", "rogue"), key_value("type", "input")];
        assert!(stamp.override_attributes(&mut copied));
        assert_eq!(copied[0], key_value("team.id", "platform"));
        assert!(!stamp.override_attributes(&mut copied), "already right");
        let mut plain = vec![key_value("type", "input")];
        assert!(!stamp.override_attributes(&mut plain));
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn switches_off_add_nothing_and_an_existing_instance_id_is_kept() {
        let settings = ResourceSettings {
            project_name: false,
            ..ResourceSettings::default()
        };
        let stamp = ResourceStamp::new(&settings, Some("p"), Some("main"), Some("ours"));
        let mut r = Some(Resource {
            attributes: vec![key_value(SERVICE_INSTANCE_ID, "claudes")],
            ..Default::default()
        });
        stamp.apply(&mut r);
        assert_eq!(get(&r, SERVICE_INSTANCE_ID).as_deref(), Some("claudes"));
        assert_eq!(get(&r, PROJECT_NAME), None);
        assert_eq!(get(&r, GIT_BRANCH), None, "branch is off by default");
    }

    #[test]
    fn a_missing_resource_is_created() {
        let stamp = ResourceStamp::new(&ResourceSettings::default(), None, None, Some("i-2"));
        let mut r = None;
        stamp.apply(&mut r);
        assert_eq!(get(&r, SERVICE_INSTANCE_ID).as_deref(), Some("i-2"));
    }

    #[test]
    fn instance_ids_are_distinct_v4_uuids() {
        let a = new_service_instance_id().expect("random");
        let b = new_service_instance_id().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
