//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.
#![allow(dead_code)]
mod otlp;
// store: durable outbox and usage rows (issue 4); report: `claude-telemetry report`.
mod report;
mod store;

fn main() {}
