# claude-telemetry: the manual alternative to the relay. Source this file (`. setup-env.sh`)
# and plain `claude` sends its telemetry straight to the stack's collector on this machine.
# Without the relay there is no privacy policy, no local copy and no retry while the stack is
# down; prefer `alias claude='claude-telemetry run --'`.
# Note: an `env` block with OTEL_* keys in ~/.claude/settings.json or .claude/settings.json
# overrides these variables.
export CLAUDE_CODE_ENABLE_TELEMETRY=1
export OTEL_METRICS_EXPORTER=otlp
export OTEL_LOGS_EXPORTER=otlp
export OTEL_EXPORTER_OTLP_PROTOCOL=grpc
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:${CLAUDE_TELEMETRY_OTLP_GRPC_PORT:-4317}"
export OTEL_METRIC_EXPORT_INTERVAL=10000
export OTEL_LOGS_EXPORT_INTERVAL=5000
# Keep session.id on metrics: every dashboard series is per session.
export OTEL_METRICS_INCLUDE_SESSION_ID=true
# Optional: team attributes for the dashboards' team/department/project variables.
# export OTEL_RESOURCE_ATTRIBUTES="team.id=platform,department=engineering,project=web"
