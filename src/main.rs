//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.
#![allow(dead_code)]
mod otlp;
mod relay;
mod settings;

fn main() {}
