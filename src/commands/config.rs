//! `claude-telemetry config`: the effective settings and the layer each value came from.

use crate::settings::{self, Loaded, Source};
use clap::Args;
use serde_json::json;

/// Flags of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON for scripts: {"settings": …, "sources": {key: source}, "files": […]}.
    #[arg(long)]
    pub json: bool,
}

/// Prints the effective settings.
pub fn run(args: &ConfigArgs, loaded: &Loaded) -> anyhow::Result<i32> {
    let values = settings::flatten_for_display(&loaded.settings);
    let source_of = |key: &str| -> String {
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
        let out = json!({"settings": flat, "sources": sources, "files": files});
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
    let width = values.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in &values {
        let shown = value.to_string();
        println!("{key:width$} = {shown:24} # {}", source_of(key));
    }
    Ok(0)
}
