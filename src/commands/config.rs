//! `claude-telemetry config`: the effective settings, the layer each value came from, what an
//! administrator's policy locks, and (`--explain`) what leaves the machine under the policy.

use crate::launcher;
use crate::relay::policy;
use crate::settings::{self, Loaded, Source};
use clap::Args;
use serde_json::json;

/// Flags of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON for scripts: {"settings", "sources", "files", "locked", "not_applied"}.
    #[arg(long)]
    pub json: bool,
    /// Show, for a sample of Claude Code's real telemetry, what leaves the machine under the
    /// effective policy: before and after of events and a metric point.
    #[arg(long)]
    pub explain: bool,
}

/// Prints the effective settings (or the policy explanation).
pub fn run(args: &ConfigArgs, loaded: &Loaded) -> anyhow::Result<i32> {
    if args.explain {
        return explain(args, loaded);
    }
    let values = settings::flatten_for_display(&loaded.settings);
    let locked_by = |key: &str| -> Option<String> {
        let managed = loaded.managed.as_ref()?;
        managed
            .locked
            .iter()
            .any(|k| key == k || key.starts_with(&format!("{k}.")))
            .then(|| format!("locked by {}", managed.path.display()))
    };
    let source_of = |key: &str| -> String {
        if let Some(lock) = locked_by(key) {
            return lock;
        }
        // Map entries (claude.env.X) inherit the source recorded for their table or themselves.
        let mut k = key.to_string();
        loop {
            if let Some(s) = loaded.provenance.get(&k) {
                return s.to_string();
            }
            match k.rfind('.') {
                Some(i) => k.truncate(i),
                None => return Source::Default.to_string(),
            }
        }
    };
    let not_applied: Vec<_> = loaded
        .managed
        .iter()
        .flat_map(|m| m.loosening.iter().map(move |a| (m, a)))
        .collect();
    if args.json {
        let mut sources = serde_json::Map::new();
        let mut flat = serde_json::Map::new();
        for (key, value) in &values {
            sources.insert(key.clone(), json!(source_of(key)));
            flat.insert(key.clone(), serde_json::to_value(value)?);
        }
        let files: Vec<_> = loaded
            .files
            .iter()
            .map(|(s, exists)| json!({"layer": s.to_string(), "exists": exists}))
            .collect();
        let locked: serde_json::Map<String, serde_json::Value> = loaded
            .managed
            .iter()
            .flat_map(|m| {
                m.locked
                    .iter()
                    .map(move |k| (k.clone(), json!(m.path.display().to_string())))
            })
            .collect();
        let refused: Vec<_> = not_applied
            .iter()
            .map(|(m, a)| json!({"key": a.key, "wanted": a.wanted, "locked": a.locked, "by": m.path.display().to_string()}))
            .collect();
        let out = json!({"settings": flat, "sources": sources, "files": files, "locked": locked, "not_applied": refused});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!(
        "# Effective claude-telemetry settings (defaults < user file < project file < env < flags)"
    );
    for (source, exists) in &loaded.files {
        let state = if *exists { "" } else { " (not present)" };
        println!("# {source}{state}");
    }
    if let Some(managed) = &loaded.managed {
        println!(
            "# managed policy {} locks: {}",
            managed.path.display(),
            managed.locked.join(", ")
        );
    }
    for (m, a) in &not_applied {
        println!(
            "# NOT APPLIED: {} = {} (locked to {} by {}; settings may only tighten it)",
            a.key,
            a.wanted,
            a.locked,
            m.path.display()
        );
    }
    let width = values.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in &values {
        let shown = value.to_string();
        println!("{key:width$} = {shown:24} # {}", source_of(key));
    }
    Ok(0)
}

fn explain(args: &ConfigArgs, loaded: &Loaded) -> anyhow::Result<i32> {
    let policy = launcher::prepare_policy(loaded)?;
    let explanation = policy::explain(&policy)?;
    if args.json {
        let items: Vec<_> = explanation
            .items
            .iter()
            .map(|i| json!({"item": i.title, "before": i.before, "after": i.after}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"unknown_keys_rule": explanation.unknown_keys_rule, "items": items})
            )?
        );
        return Ok(0);
    }
    println!(
        "# What leaves this machine under the effective policy (a sample of Claude Code's real telemetry)"
    );
    println!("# {}", explanation.unknown_keys_rule);
    for item in &explanation.items {
        println!("\n== {}", item.title);
        println!(
            "-- as claude sends it:\n{}",
            serde_json::to_string_pretty(&item.before)?
        );
        match &item.after {
            Some(after) => println!(
                "-- as the relay forwards it:\n{}",
                serde_json::to_string_pretty(after)?
            ),
            None => println!("-- as the relay forwards it: (removed)"),
        }
    }
    Ok(0)
}
