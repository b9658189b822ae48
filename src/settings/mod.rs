//! Layered settings: built-in defaults < user file < project file < environment < flags.
//!
//! Each layer is validated on its own, so an error names the file, line and column (or the
//! variable, or the flag) it came from. The merged result remembers which layer set each value,
//! which `claude-telemetry config` prints.

pub mod budget;
mod checks;
mod error;
mod layers;
mod model;
mod paths;
pub mod policy;
pub mod stack;

pub use error::SettingsError;
pub use model::*;
pub use paths::Paths;

use checks::{load_managed, validate, validate_budget, validate_policy};
use layers::{env_layers, file_layer, flag_layer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Where a value came from, in increasing precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    UserFile(PathBuf),
    ProjectFile(PathBuf),
    Env(String),
    Flag(String),
    /// The administrator's managed policy file (team budgets).
    Managed(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::UserFile(p) => write!(f, "user file {}", p.display()),
            Source::ProjectFile(p) => write!(f, "project file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
            Source::Managed(p) => write!(f, "managed policy {}", p.display()),
        }
    }
}

/// One settings layer before merging: a TOML table and where it came from.
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: Source,
    pub table: Table,
}

/// The administrator's policy file and what it changed.
#[derive(Debug, Clone)]
pub struct Managed {
    pub path: PathBuf,
    /// Dotted keys the file locks.
    pub locked: Vec<String>,
    /// User or project values that tried to loosen a locked key (the locked value applies).
    pub loosening: Vec<policy::LooseningAttempt>,
}

/// The effective settings and the provenance of every leaf value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    /// The managed policy, when the administrator installed one.
    pub managed: Option<Managed>,
    /// Dotted key → the layer that set it last.
    pub provenance: BTreeMap<String, Source>,
    /// Files consulted, in precedence order, with whether they exist.
    pub files: Vec<(Source, bool)>,
    pub paths: Paths,
}

/// A `key=value` override from the command line (`run --set upstream.timeout_ms=500`).
#[derive(Debug, Clone, PartialEq)]
pub struct FlagOverride {
    /// How the user spelled it, for messages.
    pub flag: String,
    pub key: String,
    pub value: String,
}

/// Loads every layer for the given working directory, environment and flags.
pub fn load(
    cwd: &Path,
    env: &BTreeMap<String, String>,
    flags: &[FlagOverride],
) -> Result<Loaded, SettingsError> {
    let paths = Paths::resolve(env);
    let mut layers = Vec::new();
    let mut files = Vec::new();

    let user_file = paths.user_config_file();
    files.push((Source::UserFile(user_file.clone()), user_file.is_file()));
    if user_file.is_file() {
        layers.push(file_layer(&user_file, Source::UserFile(user_file.clone()))?);
    }
    if let Some(project_file) = find_project_file(cwd) {
        files.push((Source::ProjectFile(project_file.clone()), true));
        layers.push(file_layer(
            &project_file,
            Source::ProjectFile(project_file.clone()),
        )?);
    }
    layers.extend(env_layers(env)?);
    for flag in flags {
        layers.push(flag_layer(flag)?);
    }
    let (mut settings, provenance) = merge(&layers)?;
    validate(&settings, &provenance)?;
    validate_policy(&settings.policy(), &provenance)?;
    validate_budget(&settings.budget, &provenance)?;
    let mut provenance = provenance;
    let managed = match load_managed(env)? {
        Some((path, policy_file)) => {
            let user_set = |key: &str| {
                provenance
                    .get(key)
                    .is_some_and(|source| *source != Source::Default)
            };
            let merged = policy::merge_managed(&policy_file, &settings.policy(), &user_set);
            settings.set_policy(merged.effective);
            let mut loosening = merged.loosening;
            let (budget, over_ceiling, from_managed) =
                budget::merge_managed_budget(&policy_file.budget, &settings.budget);
            settings.budget = budget;
            loosening.extend(over_ceiling);
            for (key, managed) in budget::BUDGET_KEYS.iter().zip(from_managed) {
                if managed {
                    provenance.insert((*key).to_string(), Source::Managed(path.clone()));
                }
            }
            Some(Managed {
                path,
                locked: policy_file.locked_keys(),
                loosening,
            })
        }
        None => None,
    };
    Ok(Loaded {
        settings,
        managed,
        provenance,
        files,
        paths,
    })
}

/// `.claude-telemetry.toml` in `cwd` or the nearest parent directory.
pub fn find_project_file(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors()
        .map(|dir| dir.join(".claude-telemetry.toml"))
        .find(|p| p.is_file())
}

/// Tables whose entries are user data (each entry its own leaf), not fixed keys.
const MAP_KEYS: &[&str] = &[
    "claude.env",
    "upstream.headers",
    "resource.attributes",
    "stack.images",
];

fn merge(layers: &[Layer]) -> Result<(Settings, BTreeMap<String, Source>), SettingsError> {
    let defaults = Table::try_from(Settings::default()).map_err(|e| SettingsError {
        location: "built-in defaults".into(),
        key: String::new(),
        message: e.to_string(),
        suggestion: None,
    })?;
    let mut merged = Table::new();
    let mut provenance = BTreeMap::new();
    merge_into(
        &mut merged,
        &defaults,
        "",
        &Source::Default,
        &mut provenance,
    );
    for layer in layers {
        merge_into(
            &mut merged,
            &layer.table,
            "",
            &layer.source,
            &mut provenance,
        );
    }
    let settings = Settings::deserialize(Value::Table(merged)).map_err(|e| SettingsError {
        location: "merged settings".into(),
        key: String::new(),
        message: e.to_string(),
        suggestion: None,
    })?;
    Ok((settings, provenance))
}

use serde::Deserialize;

fn merge_into(
    target: &mut Table,
    layer: &Table,
    prefix: &str,
    source: &Source,
    provenance: &mut BTreeMap<String, Source>,
) {
    for (key, value) in layer {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (value, target.get_mut(key)) {
            (Value::Table(inner), Some(Value::Table(existing))) => {
                merge_into(existing, inner, &dotted, source, provenance);
            }
            (Value::Table(inner), _) => {
                let mut fresh = Table::new();
                merge_into(&mut fresh, inner, &dotted, source, provenance);
                if inner.is_empty() || MAP_KEYS.contains(&dotted.as_str()) {
                    provenance.insert(dotted.clone(), source.clone());
                }
                target.insert(key.clone(), Value::Table(fresh));
            }
            (other, _) => {
                provenance.insert(dotted, source.clone());
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Every leaf value as a dotted key and a display string, secrets masked.
pub fn flatten_for_display(settings: &Settings) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Ok(table) = Table::try_from(settings) {
        flatten(&table, "", &mut out);
    }
    for (key, value) in out.iter_mut() {
        if key.starts_with("upstream.headers.") || key == "privacy.team_key" {
            *value = Value::String("<set, hidden>".into());
        }
    }
    out
}

fn flatten(table: &Table, prefix: &str, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) if !inner.is_empty() => flatten(inner, &dotted, out),
            other => {
                out.insert(dotted, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
