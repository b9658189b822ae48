//! `validate`: checks the stack's files before Docker ever sees them.
//!
//! What is checked: every YAML and JSON file parses; the keys the stack depends on are there
//! (collector pipelines and the components they name, delta sums kept as gauge samples and
//! remote-written to Prometheus, no deprecated `resource_to_telemetry_conversion`, logs to
//! Loki's `/otlp`, `health_check`; Prometheus's out-of-order window for replayed launches;
//! Loki TSDB schema v13 with structured metadata, the launch id not an index label, a
//! retention equal to Prometheus's; datasource uids); the compose file publishes ports on
//! 127.0.0.1 only, pins every image tag and mounts only files that exist; dashboards use schemaVersion 39–41, React panel
//! types, datasource uids that are provisioned, an alert list that reads a provisioned
//! rule source by name ([`check_alert_list`]), every variable they define, no `${…:regex}`
//! inside a double-quoted string (Grafana escapes with one backslash, which a double-quoted
//! PromQL/LogQL string rejects), no `increase`/`rate` over a window that can be under a minute,
//! and only the metric and label names of [`crate::definitions`]. LogQL is checked
//! structurally (see [`check_logql`]); full parsing is left to promtool and Grafana's own
//! grammars in the tests.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::definitions;

use super::files::{COMPOSE_FILE, FILES};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, relative to the stack root.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// A datasource the Grafana provisioning file defines, as dashboards refer to it: panels and
/// variables by uid, the alert list by name (Grafana's alertlist panel matches its
/// `options.datasource` against the rule source's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedDatasource {
    /// `uid`.
    pub uid: String,
    /// `name`.
    pub name: String,
    /// `type` (`prometheus`, `loki`, …).
    pub kind: String,
    /// `jsonData.manageAlerts` is not `false`: Grafana lists the datasource's own rules
    /// (Prometheus rule files) only then.
    pub manages_alerts: bool,
}

impl ProvisionedDatasource {
    /// The stack's own datasources as `config/grafana/provisioning/datasources` defines them,
    /// for checking a dashboard on its own.
    #[cfg(test)]
    pub fn stack_defaults() -> Vec<ProvisionedDatasource> {
        [
            (
                definitions::datasource::PROMETHEUS_UID,
                "Prometheus",
                "prometheus",
            ),
            (definitions::datasource::LOKI_UID, "Loki", "loki"),
        ]
        .into_iter()
        .map(|(uid, name, kind)| ProvisionedDatasource {
            uid: uid.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            manages_alerts: true,
        })
        .collect()
    }
}

/// Where the files come from: a directory (the data dir or a checkout) or the binary itself.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files under this root (`compose/…`, `config/…`).
    Dir(PathBuf),
    /// The files embedded in the binary.
    Embedded,
}

impl Source {
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        match self {
            Source::Dir(root) => std::fs::read(root.join(rel)).ok(),
            Source::Embedded => super::files::embedded(rel).map(<[u8]>::to_vec),
        }
    }

    fn exists(&self, rel: &str) -> bool {
        match self {
            Source::Dir(root) => root.join(rel).exists(),
            Source::Embedded => FILES
                .iter()
                .any(|f| f.path == rel || f.path.starts_with(&format!("{rel}/"))),
        }
    }

    /// The dashboard files (relative paths).
    fn dashboards(&self) -> Vec<String> {
        match self {
            Source::Dir(root) => {
                let dir = root.join("config/grafana/dashboards");
                let mut out: Vec<String> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        name.ends_with(".json")
                            .then(|| format!("config/grafana/dashboards/{name}"))
                    })
                    .collect();
                out.sort();
                out
            }
            Source::Embedded => FILES
                .iter()
                .filter(|f| f.path.starts_with("config/grafana/dashboards/"))
                .map(|f| f.path.to_string())
                .collect(),
        }
    }
}

struct Checker<'a> {
    source: &'a Source,
    findings: Vec<Finding>,
    checked: usize,
    /// Datasources the provisioning file defines (filled by the provisioning check).
    datasources: Vec<ProvisionedDatasource>,
}

impl Checker<'_> {
    fn fail(&mut self, file: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            file: file.to_string(),
            message: message.into(),
        });
    }

    fn yaml(&mut self, rel: &str) -> Option<Yaml> {
        let Some(bytes) = self.source.read(rel) else {
            self.fail(rel, "missing");
            return None;
        };
        self.checked += 1;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                self.fail(rel, "not UTF-8");
                return None;
            }
        };
        match YamlLoader::load_from_str(&text) {
            Ok(mut docs) if !docs.is_empty() => Some(docs.swap_remove(0)),
            Ok(_) => {
                self.fail(rel, "empty YAML document");
                None
            }
            Err(e) => {
                self.fail(rel, format!("YAML does not parse: {e}"));
                None
            }
        }
    }
}

/// Result of [`validate`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Files read.
    pub checked: usize,
    /// Problems; empty means valid.
    pub findings: Vec<Finding>,
}

/// Checks every file of the stack in `source`.
pub fn validate(source: &Source) -> Report {
    let mut c = Checker {
        source,
        findings: Vec::new(),
        checked: 0,
        datasources: Vec::new(),
    };
    check_compose(&mut c);
    check_collector(&mut c);
    check_prometheus(&mut c);
    check_loki(&mut c);
    check_grafana_provisioning(&mut c);
    check_retention_aligned(&mut c);
    for rel in source.dashboards() {
        check_dashboard_file(&mut c, &rel);
    }
    Report {
        checked: c.checked,
        findings: c.findings,
    }
}

fn str_of(y: &Yaml) -> Option<&str> {
    y.as_str()
}

fn check_compose(c: &mut Checker<'_>) {
    let rel = COMPOSE_FILE;
    let Some(doc) = c.yaml(rel) else { return };
    let Some(services) = doc["services"].as_hash() else {
        c.fail(rel, "no `services`");
        return;
    };
    for name in ["otel-collector", "prometheus", "loki", "grafana"] {
        if doc["services"][name].is_badvalue() {
            c.fail(rel, format!("service `{name}` missing"));
        }
    }
    for (name, svc) in services {
        let name = str_of(name).unwrap_or("?").to_string();
        match str_of(&svc["image"]) {
            None => c.fail(rel, format!("service `{name}` has no image")),
            Some(image) => {
                if let Err(e) = check_image_pinned(image) {
                    c.fail(rel, format!("service `{name}`: {e}"));
                }
            }
        }
        for port in svc["ports"].as_vec().into_iter().flatten() {
            let text = match port {
                Yaml::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if !text.starts_with("127.0.0.1:") {
                c.fail(
                    rel,
                    format!("service `{name}` publishes `{text}` beyond 127.0.0.1"),
                );
            }
        }
        for volume in svc["volumes"].as_vec().into_iter().flatten() {
            let Some(spec) = str_of(volume) else { continue };
            let source = spec.split(':').next().unwrap_or_default();
            if let Some(path) = source.strip_prefix("../") {
                if !c.source.exists(path) {
                    c.fail(
                        rel,
                        format!("service `{name}` mounts `{source}`, which does not exist"),
                    );
                }
            } else if source.starts_with('/') || source.starts_with('.') {
                c.fail(
                    rel,
                    format!("service `{name}` mounts `{source}` from outside the stack dir"),
                );
            }
        }
    }
}

/// Rejects untagged images and `latest`; accepts `${VAR:-name:tag}` by checking the default.
pub fn check_image_pinned(image: &str) -> Result<(), String> {
    let effective = match image.strip_prefix("${") {
        Some(rest) => match rest.split_once(":-") {
            Some((_, default)) => default.trim_end_matches('}'),
            None => return Err(format!("image `{image}` has no pinned default")),
        },
        None => image,
    };
    let name = effective.rsplit('/').next().unwrap_or(effective);
    match name.split_once(':') {
        None => Err(format!("image `{effective}` has no tag")),
        Some((_, "latest")) => Err(format!("image `{effective}` uses `latest`")),
        Some((_, "")) => Err(format!("image `{effective}` has an empty tag")),
        Some(_) => Ok(()),
    }
}

/// Parses Go-style durations made of `h`, `m`, `s` parts (`24h`, `1h30m`, `90s`) into seconds.
pub fn parse_duration_secs(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut number = String::new();
    for ch in text.trim().chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86400,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

fn check_collector(c: &mut Checker<'_>) {
    let rel = "config/otel-collector.yaml";
    let Some(doc) = c.yaml(rel) else { return };
    for deprecated in ["otlphttp", "deltatocumulative", "loki"] {
        for section in ["exporters", "processors"] {
            if let Some(map) = doc[section].as_hash() {
                for key in map.keys().filter_map(str_of) {
                    if key.split('/').next() == Some(deprecated) {
                        c.fail(
                            rel,
                            format!("`{key}` is a deprecated or removed component name"),
                        );
                    }
                }
            }
        }
    }
    if doc["extensions"]["health_check"].is_badvalue()
        || !doc["service"]["extensions"]
            .as_vec()
            .is_some_and(|v| v.iter().any(|e| str_of(e) == Some("health_check")))
    {
        c.fail(
            rel,
            "the `health_check` extension must be defined and enabled",
        );
    }
    if yaml_has_key(&doc, "resource_to_telemetry_conversion") {
        c.fail(
            rel,
            "`resource_to_telemetry_conversion` is deprecated: copy resource attributes to points with a `transform` processor",
        );
    }
    let rw_ok = doc["exporters"].as_hash().is_some_and(|map| {
        map.iter().any(|(k, v)| {
            str_of(k).is_some_and(|k| k.split('/').next() == Some("prometheusremotewrite"))
                && str_of(&v["endpoint"])
                    .is_some_and(|e| e.trim_end_matches('/').ends_with("/api/v1/write"))
        })
    });
    if !rw_ok {
        c.fail(
            rel,
            "no `prometheusremotewrite` exporter pointing at Prometheus's /api/v1/write",
        );
    }
    let loki_ok = doc["exporters"].as_hash().is_some_and(|map| {
        map.iter().any(|(k, v)| {
            str_of(k).is_some_and(|k| k.split('/').next() == Some("otlp_http"))
                && str_of(&v["endpoint"])
                    .is_some_and(|e| e.trim_end_matches('/').ends_with("/otlp"))
        })
    });
    if !loki_ok {
        c.fail(
            rel,
            "no `otlp_http` exporter pointing at Loki's /otlp endpoint",
        );
    }
    for pipeline in ["metrics", "logs"] {
        let p = &doc["service"]["pipelines"][pipeline];
        if p.is_badvalue() {
            c.fail(rel, format!("pipeline `{pipeline}` missing"));
            continue;
        }
        for (kind, section) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for component in p[kind].as_vec().into_iter().flatten().filter_map(str_of) {
                // A connector (e.g. `count`) is an exporter of one pipeline and a receiver
                // of another, defined under `connectors`.
                let connector = kind != "processors" && !doc["connectors"][component].is_badvalue();
                if doc[section][component].is_badvalue() && !connector {
                    c.fail(
                        rel,
                        format!("pipeline `{pipeline}` uses undefined {section} `{component}`"),
                    );
                }
            }
        }
    }
    let metrics_processors: Vec<&str> = doc["service"]["pipelines"]["metrics"]["processors"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(str_of)
        .collect();
    let keeps_deltas = metrics_processors.iter().any(|p| {
        p.split('/').next() == Some("transform")
            && yaml_mentions(&doc["processors"][*p], "convert_sum_to_gauge()")
    });
    if !keeps_deltas {
        c.fail(
            rel,
            "the metrics pipeline must keep delta sums as gauge samples (`transform` with `convert_sum_to_gauge()`): the remote-write exporter drops delta sums",
        );
    }
    if metrics_processors.contains(&"delta_to_cumulative") {
        c.fail(
            rel,
            "`delta_to_cumulative` turns each export into a running total the dashboards would have to extrapolate; keep deltas as gauges",
        );
    }
}

/// True when a mapping anywhere under `y` has the key `key`.
fn yaml_has_key(y: &Yaml, key: &str) -> bool {
    match y {
        Yaml::Array(v) => v.iter().any(|e| yaml_has_key(e, key)),
        Yaml::Hash(h) => h
            .iter()
            .any(|(k, v)| str_of(k) == Some(key) || yaml_has_key(v, key)),
        _ => false,
    }
}

/// True when any string under `y` contains `needle`.
fn yaml_mentions(y: &Yaml, needle: &str) -> bool {
    match y {
        Yaml::String(s) => s.contains(needle),
        Yaml::Array(v) => v.iter().any(|e| yaml_mentions(e, needle)),
        Yaml::Hash(h) => h.values().any(|e| yaml_mentions(e, needle)),
        _ => false,
    }
}

fn check_prometheus(c: &mut Checker<'_>) {
    let rel = "config/prometheus.yml";
    let Some(doc) = c.yaml(rel) else { return };
    let window = str_of(&doc["storage"]["tsdb"]["out_of_order_time_window"])
        .and_then(parse_duration_secs)
        .unwrap_or(0);
    if window < 86_400 {
        c.fail(
            rel,
            "`storage.tsdb.out_of_order_time_window` must be at least 1d: launches the relay replays late are otherwise rejected as out of bounds",
        );
    }
    check_prometheus_rules(c, rel, &doc);
}

/// Every `rule_files` entry of the Prometheus config is a stack file the compose file mounts
/// beside it, and holds rule groups whose rules each have an `expr` and a name (promtool
/// checks the expressions: tests/alerts.rs).
fn check_prometheus_rules(c: &mut Checker<'_>, rel: &str, doc: &Yaml) {
    let compose = c
        .source
        .read(COMPOSE_FILE)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    for entry in doc["rule_files"].as_vec().into_iter().flatten() {
        let Some(name) = str_of(entry) else {
            c.fail(rel, "a `rule_files` entry is not a string");
            continue;
        };
        let file = format!("config/{name}");
        let mount = format!("../{file}:/etc/prometheus/{name}");
        if !compose.contains(&mount) {
            c.fail(
                COMPOSE_FILE,
                format!("Prometheus loads `{name}` but the compose file does not mount `{mount}`"),
            );
        }
        let Some(rules) = c.yaml(&file) else { continue };
        let groups = rules["groups"].as_vec().cloned().unwrap_or_default();
        if groups.is_empty() {
            c.fail(&file, "no rule `groups`");
        }
        for (g, group) in groups.iter().enumerate() {
            for (r, rule) in group["rules"].as_vec().into_iter().flatten().enumerate() {
                let named = str_of(&rule["alert"]).or_else(|| str_of(&rule["record"]));
                if named.is_none() || str_of(&rule["expr"]).is_none() {
                    c.fail(
                        &file,
                        format!("groups[{g}].rules[{r}] needs `alert` (or `record`) and `expr`"),
                    );
                }
            }
        }
    }
}

fn check_loki(c: &mut Checker<'_>) {
    let rel = "config/loki.yaml";
    let Some(doc) = c.yaml(rel) else { return };
    let v13 = doc["schema_config"]["configs"]
        .as_vec()
        .is_some_and(|configs| {
            configs.iter().any(|cfg| {
                str_of(&cfg["schema"]) == Some("v13") && str_of(&cfg["store"]) == Some("tsdb")
            })
        });
    if !v13 {
        c.fail(
            rel,
            "needs a TSDB schema v13 period (required for structured metadata)",
        );
    }
    if doc["limits_config"]["allow_structured_metadata"].as_bool() != Some(true) {
        c.fail(
            rel,
            "`limits_config.allow_structured_metadata` must be true (OTLP attributes land there)",
        );
    }
    let labels = loki_index_resource_attributes(&doc["limits_config"]["otlp_config"]);
    if labels.iter().any(|l| l == "service.instance.id") {
        c.fail(
            rel,
            "`service.instance.id` (one per launch) would be a Loki index label: set `otlp_config.resource_attributes.ignore_defaults: true`",
        );
    }
    if str_of(&doc["limits_config"]["retention_period"]).is_none() {
        c.fail(rel, "`limits_config.retention_period` missing");
    }
}

/// Prometheus's `--storage.tsdb.retention.time` and Loki's `retention_period` must be the same
/// value, so a dashboard never shows costs whose events are gone (or the other way round).
fn check_retention_aligned(c: &mut Checker<'_>) {
    let text = |rel: &str| {
        c.source
            .read(rel)
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .unwrap_or_default()
    };
    let compose = text(COMPOSE_FILE);
    let loki = text("config/loki.yaml");
    let prometheus = compose
        .lines()
        .find_map(|l| l.split("--storage.tsdb.retention.time=").nth(1))
        .map(|v| v.trim().trim_matches('"').to_string());
    let loki_value = loki
        .lines()
        .find_map(|l| l.trim().strip_prefix("retention_period:"))
        .map(|v| v.trim().trim_matches('"').to_string());
    match (prometheus, loki_value) {
        (Some(p), Some(l)) if p == l => {}
        (p, l) => c.fail(
            "config/loki.yaml",
            format!(
                "retention differs from Prometheus's: Loki `{}`, Prometheus `{}` (use the same value, e.g. ${{CLAUDE_TELEMETRY_RETENTION:-90d}} in both)",
                l.unwrap_or_default(),
                p.unwrap_or_default()
            ),
        ),
    }
}

/// The resource attributes Loki makes index labels under `otlp_config`, following Loki's
/// `ApplyGlobalOTLPConfig` + `actionForAttribute`: unless `ignore_defaults`, the default list
/// comes first (so it wins over a later `structured_metadata` rule for the same attribute).
pub fn loki_index_resource_attributes(otlp_config: &Yaml) -> Vec<String> {
    let ra = &otlp_config["resource_attributes"];
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    if ra["ignore_defaults"].as_bool() != Some(true) {
        rules.push((
            "index_label".to_string(),
            definitions::loki::DEFAULT_INDEX_RESOURCE_ATTRIBUTES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ));
    }
    for rule in ra["attributes_config"].as_vec().into_iter().flatten() {
        let action = str_of(&rule["action"])
            .unwrap_or("structured_metadata")
            .to_string();
        let attrs = rule["attributes"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(str_of)
            .map(str::to_string)
            .collect();
        rules.push((action, attrs));
    }
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (action, attrs) in &rules {
        for a in attrs {
            if seen.contains(a) {
                continue;
            }
            seen.push(a.clone());
            if action == "index_label" {
                out.push(a.clone());
            }
        }
    }
    out
}

fn check_grafana_provisioning(c: &mut Checker<'_>) {
    let rel = "config/grafana/provisioning/datasources/datasources.yaml";
    if let Some(doc) = c.yaml(rel) {
        let datasources: Vec<ProvisionedDatasource> = doc["datasources"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some(ProvisionedDatasource {
                    uid: str_of(&d["uid"])?.to_string(),
                    name: str_of(&d["name"]).unwrap_or_default().to_string(),
                    kind: str_of(&d["type"]).unwrap_or_default().to_string(),
                    manages_alerts: d["jsonData"]["manageAlerts"].as_bool() != Some(false),
                })
            })
            .collect();
        for uid in definitions::datasource::ALL {
            if !datasources.iter().any(|d| d.uid == *uid) {
                c.fail(rel, format!("datasource uid `{uid}` missing"));
            }
        }
        c.datasources = datasources;
    }
    let rel = "config/grafana/provisioning/dashboards/dashboards.yaml";
    if let Some(doc) = c.yaml(rel) {
        let ok = doc["providers"]
            .as_vec()
            .is_some_and(|p| p.iter().any(|p| str_of(&p["options"]["path"]).is_some()));
        if !ok {
            c.fail(rel, "no dashboards provider with `options.path`");
        }
    }
}

/// Panel types rendered by Grafana's React code (no Angular plugins, which Grafana 12+ dropped).
pub const REACT_PANEL_TYPES: &[&str] = &[
    "row",
    "stat",
    "timeseries",
    "barchart",
    "bargauge",
    "gauge",
    "piechart",
    "table",
    "logs",
    "text",
    "histogram",
    "heatmap",
    "state-timeline",
    "status-history",
    "alertlist",
];

/// One query of a dashboard.
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    /// The panel title (or variable name).
    pub panel: String,
    /// The datasource uid.
    pub datasource: String,
    /// The expression.
    pub expr: String,
}

/// Every query of a dashboard, panels first (nested rows included), then variables.
pub fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    fn walk(panels: &Value, out: &mut Vec<DashboardQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], out);
            let title = panel["title"].as_str().unwrap_or("").to_string();
            let panel_ds = panel["datasource"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let ds = target["datasource"]["uid"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| panel_ds.clone());
                out.push(DashboardQuery {
                    panel: title.clone(),
                    datasource: ds,
                    expr: expr.to_string(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"].as_str() != Some("query") {
            continue;
        }
        let expr = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str());
        if let Some(expr) = expr {
            out.push(DashboardQuery {
                panel: var["name"].as_str().unwrap_or("").to_string(),
                datasource: var["datasource"]["uid"].as_str().unwrap_or("").to_string(),
                expr: expr.to_string(),
            });
        }
    }
    out
}

static STRING_LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|`[^`]*`"#).expect("valid regex"));
static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").expect("valid regex"));
static MATCHER_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)").expect("valid regex")
});
static GROUPING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
        .expect("valid regex")
});
static BRACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{([^}]*)\}").expect("valid regex"));
static LABEL_VALUES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
        .expect("valid regex")
});

fn without_strings(expr: &str) -> String {
    STRING_LITERAL.replace_all(expr, "\"\"").to_string()
}

/// Checks that a PromQL expression names only metrics and labels listed in
/// [`crate::definitions`]; returns the problems.
pub fn check_promql_names(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(caps) = LABEL_VALUES.captures(expr) {
        if !definitions::metric::ALL.contains(&&caps[1]) {
            problems.push(format!("unknown metric `{}`", &caps[1]));
        }
        if !definitions::label::ALL.contains(&&caps[2]) {
            problems.push(format!("unknown label `{}`", &caps[2]));
        }
        return problems;
    }
    // Grafana variables (`$__range`, `${model:regex}`) are not PromQL identifiers.
    let plain = without_strings(expr);
    let plain = Regex::new(r"\$\{[^}]*\}|\$[A-Za-z_]+")
        .map(|re| re.replace_all(&plain, "0").to_string())
        .unwrap_or(plain);
    let mut metrics = 0;
    for m in IDENT.find_iter(&plain) {
        let ident = m.as_str();
        if ident.starts_with("claude_code") {
            metrics += 1;
            if !definitions::metric::ALL.contains(&ident) {
                problems.push(format!("unknown metric `{ident}`"));
            }
        }
    }
    if metrics == 0 {
        problems.push("queries no claude_code metric".to_string());
    }
    for braces in BRACES.captures_iter(&plain) {
        for caps in MATCHER_LABEL.captures_iter(&braces[1]) {
            if !definitions::label::ALL.contains(&&caps[1]) {
                problems.push(format!("unknown label `{}`", &caps[1]));
            }
        }
    }
    for caps in GROUPING.captures_iter(&plain) {
        for label in caps[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !definitions::label::ALL.contains(&label) {
                problems.push(format!("unknown label `{label}`"));
            }
        }
    }
    problems
}

/// Structural LogQL check. Checked: balanced `()`, `{}`, `[]` outside strings; the stream
/// selector is exactly `{service_name="claude-code"}`; no `| json` (bodies are not JSON);
/// `event_name` values are known events; every label in filters, `by (…)` and `unwrap` is a
/// known structured-metadata field; a metric query (`*_over_time`, `rate`) is wrapped in an
/// aggregation (`sum`/`max`/… `by`) so it stays under Loki's series limit. Not checked: full
/// grammar, operator precedence, types of unwrapped values.
pub fn check_logql(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let plain = without_strings(expr);
    let mut stack = Vec::new();
    for ch in plain.chars() {
        match ch {
            '(' | '{' | '[' => stack.push(ch),
            ')' | '}' | ']' => {
                let open = match ch {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    problems.push("unbalanced brackets".to_string());
                    return problems;
                }
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        problems.push("unbalanced brackets".to_string());
    }
    let selector = format!(
        "{{{}=\"{}\"}}",
        definitions::loki::SERVICE_LABEL,
        definitions::loki::SERVICE_NAME
    );
    if !expr.contains(&selector) {
        problems.push(format!("stream selector must be {selector}"));
    }
    if Regex::new(r"\|\s*json\b").is_ok_and(|re| re.is_match(expr)) {
        problems.push("`| json` does not apply: Claude Code's log bodies are not JSON".to_string());
    }
    if let Ok(re) = Regex::new(r#"event_name\s*=\s*"([^"]*)""#) {
        for caps in re.captures_iter(expr) {
            if !definitions::loki::EVENTS.contains(&&caps[1]) {
                problems.push(format!("unknown event `{}`", &caps[1]));
            }
        }
    }
    if let Ok(re) = Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=|>|<)") {
        for caps in re.captures_iter(&plain) {
            if !definitions::loki::FIELDS.contains(&&caps[1]) {
                problems.push(format!("unknown field `{}`", &caps[1]));
            }
        }
    }
    if let Ok(re) = Regex::new(r"\bunwrap\s+([A-Za-z_][A-Za-z0-9_]*)") {
        for caps in re.captures_iter(&plain) {
            if !definitions::loki::FIELDS.contains(&&caps[1]) {
                problems.push(format!("unknown field `{}`", &caps[1]));
            }
        }
    }
    for caps in GROUPING.captures_iter(&plain) {
        for label in caps[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !definitions::loki::FIELDS.contains(&label) {
                problems.push(format!("unknown field `{label}`"));
            }
        }
    }
    let is_metric = Regex::new(r"\b(?:count_over_time|rate|bytes_over_time|bytes_rate|sum_over_time|avg_over_time|max_over_time|min_over_time|quantile_over_time)\s*\(")
        .is_ok_and(|re| re.is_match(expr));
    let aggregated = Regex::new(r"^\s*(?:sum|max|min|avg|count|topk|bottomk)\b")
        .is_ok_and(|re| re.is_match(expr));
    if is_metric && !aggregated {
        problems.push(
            "metric query must be aggregated (e.g. `sum by (…)`) to stay under Loki's series limit"
                .to_string(),
        );
    }
    problems
}

fn check_dashboard_file(c: &mut Checker<'_>, rel: &str) {
    let Some(bytes) = c.source.read(rel) else {
        c.fail(rel, "missing");
        return;
    };
    c.checked += 1;
    let dashboard: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            c.fail(rel, format!("JSON does not parse: {e}"));
            return;
        }
    };
    for problem in check_dashboard_with(&dashboard, &c.datasources) {
        c.fail(rel, problem);
    }
}

/// Every problem of one dashboard document, against the stack's own datasources.
#[cfg(test)]
pub fn check_dashboard(dashboard: &Value) -> Vec<String> {
    check_dashboard_with(dashboard, &ProvisionedDatasource::stack_defaults())
}

/// Every problem of one dashboard document; `datasources` are the provisioned ones.
pub fn check_dashboard_with(
    dashboard: &Value,
    datasources: &[ProvisionedDatasource],
) -> Vec<String> {
    let uids: Vec<&str> = datasources.iter().map(|d| d.uid.as_str()).collect();
    let datasource_uids = uids.as_slice();
    let mut problems = Vec::new();
    match dashboard["schemaVersion"].as_u64() {
        Some(v) if (39..=41).contains(&v) => {}
        other => problems.push(format!("schemaVersion {other:?} is not 39–41")),
    }
    if dashboard["uid"].as_str().is_none_or(str::is_empty) {
        problems.push("no uid".to_string());
    }
    fn walk(
        panels: &Value,
        uids: &[&str],
        datasources: &[ProvisionedDatasource],
        problems: &mut Vec<String>,
    ) {
        for panel in panels.as_array().into_iter().flatten() {
            let t = panel["type"].as_str().unwrap_or("");
            if t == "alertlist" {
                for problem in check_alert_list(panel, datasources) {
                    problems.push(format!("panel `{}`: {problem}", panel["title"]));
                }
            }
            if !REACT_PANEL_TYPES.contains(&t) {
                problems.push(format!(
                    "panel `{}` has non-React type `{t}`",
                    panel["title"]
                ));
            }
            for ds in std::iter::once(&panel["datasource"]).chain(
                panel["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            ) {
                if let Some(uid) = ds["uid"].as_str()
                    && !uids.contains(&uid)
                    && !uid.starts_with('$')
                {
                    problems.push(format!(
                        "panel `{}` uses datasource uid `{uid}`, which is not provisioned",
                        panel["title"]
                    ));
                }
            }
            for problem in check_panel_windows(panel) {
                problems.push(format!("panel `{}`: {problem}", panel["title"]));
            }
            walk(&panel["panels"], uids, datasources, problems);
        }
    }
    walk(
        &dashboard["panels"],
        datasource_uids,
        datasources,
        &mut problems,
    );
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(uid) = var["datasource"]["uid"].as_str()
            && !datasource_uids.contains(&uid)
        {
            problems.push(format!(
                "variable `{}` uses datasource uid `{uid}`, which is not provisioned",
                var["name"].as_str().unwrap_or("")
            ));
        }
    }
    problems.extend(unused_variables(dashboard));
    for q in dashboard_queries(dashboard) {
        for p in regex_format_in_double_quotes(&q.expr) {
            problems.push(format!("`{}`: {p} in `{}`", q.panel, q.expr));
        }
        let found = if q.datasource == definitions::datasource::LOKI_UID {
            check_logql(&q.expr)
        } else if q.datasource == definitions::datasource::PROMETHEUS_UID {
            check_promql_names(&q.expr)
        } else {
            vec![format!("unknown datasource uid `{}`", q.datasource)]
        };
        for p in found {
            problems.push(format!("`{}`: {p} in `{}`", q.panel, q.expr));
        }
    }
    problems
}

/// Grafana's name for its own rule source in the alert list's datasource option
/// (`GRAFANA_DATASOURCE_NAME` in grafana/grafana public/app/features/alerting/unified/utils/datasource.ts).
pub const GRAFANA_RULES_DATASOURCE_NAME: &str = "-- Grafana --";

/// Datasource types whose rules Grafana's alert list reads (`SUPPORTED_RULE_SOURCE_TYPES`).
const RULE_SOURCE_TYPES: &[&str] = &["prometheus", "loki"];

/// An alert-list panel (`alertlist`) shows the stack's alerts only when its `options.datasource`
/// is unset (every rule source) or names, by NAME as Grafana's panel stores it, the Grafana
/// rule source or a provisioned Prometheus/Loki datasource that manages alerts; and when its
/// state filter lets firing or pending alerts through. A uid in place of the name, or a
/// datasource renamed in provisioning, leaves the panel saying "No alerts matching filters"
/// while alerts fire.
pub fn check_alert_list(panel: &Value, datasources: &[ProvisionedDatasource]) -> Vec<String> {
    let mut problems = Vec::new();
    let options = &panel["options"];
    match &options["datasource"] {
        Value::Null => {}
        Value::String(name) if name == GRAFANA_RULES_DATASOURCE_NAME => {}
        Value::String(name) => match datasources.iter().find(|d| d.name == *name) {
            None => {
                let names: Vec<&str> = datasources.iter().map(|d| d.name.as_str()).collect();
                let hint = datasources
                    .iter()
                    .find(|d| d.uid == *name)
                    .map(|d| format!(" (`{name}` is the uid of `{}`: the alert list matches names)", d.name))
                    .unwrap_or_default();
                problems.push(format!(
                    "alert list reads datasource `{name}`, which is not provisioned{hint}; provisioned: {}",
                    names.join(", ")
                ));
            }
            Some(d) if !RULE_SOURCE_TYPES.contains(&d.kind.as_str()) => problems.push(format!(
                "alert list reads datasource `{name}` of type `{}`, which holds no alert rules",
                d.kind
            )),
            Some(d) if !d.manages_alerts => problems.push(format!(
                "alert list reads datasource `{name}`, whose `jsonData.manageAlerts: false` hides its rules from Grafana"
            )),
            Some(_) => {}
        },
        other => problems.push(format!(
            "alert list `options.datasource` must be a datasource name, not {other}"
        )),
    }
    let states = &options["stateFilter"];
    if states.is_object()
        && states["firing"].as_bool() != Some(true)
        && states["pending"].as_bool() != Some(true)
    {
        problems.push("alert list shows neither firing nor pending alerts".to_string());
    }
    problems
}

static DOUBLE_QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).expect("valid regex"));
static REGEX_FORMAT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{[A-Za-z0-9_]+:regex\}").expect("valid regex"));

/// `${var:regex}` inside a double-quoted string. Grafana's `regex` format escapes with ONE
/// backslash (`claude-opus-4-8\[1m\]`, `next\.js`), and a double-quoted PromQL or LogQL string
/// rejects `\[` and `\.` as unknown escapes, so the query fails as soon as such a value is
/// picked. Backquoted strings take the text as is.
pub fn regex_format_in_double_quotes(expr: &str) -> Vec<String> {
    DOUBLE_QUOTED
        .find_iter(expr)
        .filter_map(|m| REGEX_FORMAT.find(m.as_str()).map(|v| (m.as_str(), v.as_str())))
        .map(|(quoted, var)| {
            format!(
                "{var} inside the double-quoted string {quoted}: Grafana escapes regex metacharacters with one backslash, an unknown escape in a double-quoted string; use backquotes"
            )
        })
        .collect()
}

static COUNTER_WINDOW: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(increase|rate|irate|delta|idelta)\s*\((?:[^\[\]()]|\([^()]*\))*\[([^\]]+)\]")
        .expect("valid regex")
});

/// `increase`/`rate` over a window that can be shorter than a minute: a literal window under
/// 60 s, or `$__interval` in a panel whose min interval (`interval`) is unset or under a
/// minute (Grafana then goes down to the datasource's 15 s, and a window holding one sample
/// yields nothing: the bars drop most of the real total).
pub fn check_panel_windows(panel: &Value) -> Vec<String> {
    let min_interval = panel["interval"]
        .as_str()
        .and_then(parse_duration_secs)
        .unwrap_or(0);
    let mut out = Vec::new();
    for target in panel["targets"].as_array().into_iter().flatten() {
        let Some(expr) = target["expr"].as_str() else {
            continue;
        };
        for caps in COUNTER_WINDOW.captures_iter(expr) {
            let (func, window) = (&caps[1], caps[2].trim());
            let short = match window {
                "$__interval" | "${__interval}" => min_interval < 60,
                "$__rate_interval" | "${__rate_interval}" | "$__range" | "${__range}" => false,
                literal => parse_duration_secs(literal).is_some_and(|s| s < 60),
            };
            if short {
                out.push(format!(
                    "`{func}` over [{window}] can be a sub-minute window (panel min interval {min_interval} s): it misses increments; use a window of at least 1m"
                ));
            }
        }
    }
    out
}

/// Variables the dashboard defines but no query, title or other variable uses.
pub fn unused_variables(dashboard: &Value) -> Vec<String> {
    let vars: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut texts = Vec::new();
    fn collect(panels: &Value, texts: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            texts.push(panel["title"].as_str().unwrap_or("").to_string());
            for target in panel["targets"].as_array().into_iter().flatten() {
                for key in ["expr", "legendFormat"] {
                    if let Some(t) = target[key].as_str() {
                        texts.push(t.to_string());
                    }
                }
            }
            collect(&panel["panels"], texts);
        }
    }
    collect(&dashboard["panels"], &mut texts);
    for var in &vars {
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or("");
        texts.push(q.to_string());
    }
    let mut out = Vec::new();
    for var in vars {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let used = texts.iter().any(|t| {
            t.contains(&format!("${{{name}}}"))
                || t.contains(&format!("${{{name}:"))
                || t.contains(&format!("[[{name}]]"))
                || Regex::new(&format!(r"\${}\b", regex::escape(name)))
                    .is_ok_and(|re| re.is_match(t))
        });
        if !used {
            out.push(format!(
                "variable `{name}` is not used by any panel: picking it changes nothing"
            ));
        }
    }
    out
}

/// The directory to validate by default: the data dir when it holds a compose file.
pub fn default_source(data_dir: Option<&Path>) -> Source {
    match data_dir {
        Some(dir) if dir.join(COMPOSE_FILE).exists() => Source::Dir(dir.to_path_buf()),
        _ => Source::Embedded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_are_valid() {
        let report = validate(&Source::Embedded);
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.checked, FILES.len());
    }

    #[test]
    fn unknown_metric_and_label_are_reported() {
        let p = check_promql_names(
            r#"sum by (tem_id) (increase(claude_code_cost_usd_total{model=~`${model:regex}`}[$__range]))"#,
        );
        assert!(
            p.iter().any(|p| p.contains("claude_code_cost_usd_total")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("tem_id")), "{p:?}");
        assert!(
            check_promql_names(
                r#"sum(sum_over_time(claude_code_cost_usage_USD{model=~".*"}[1h]))"#
            )
            .is_empty()
        );
    }

    #[test]
    fn logql_must_aggregate_and_must_not_parse_json() {
        let ok = r#"sum by (model) (count_over_time({service_name="claude-code"} | event_name="api_request" [5m]))"#;
        assert!(check_logql(ok).is_empty(), "{:?}", check_logql(ok));
        let bare =
            r#"count_over_time({service_name="claude-code"} | event_name="api_request" [5m])"#;
        assert!(check_logql(bare).iter().any(|p| p.contains("aggregated")));
        let json = r#"{service_name="claude-code"} | json | event_name="api_request""#;
        assert!(check_logql(json).iter().any(|p| p.contains("json")));
        let unbalanced = r#"sum(count_over_time({service_name="claude-code"} [5m])"#;
        assert!(
            check_logql(unbalanced)
                .iter()
                .any(|p| p.contains("unbalanced"))
        );
    }

    #[test]
    fn images_must_be_pinned() {
        assert!(check_image_pinned("${X:-grafana/loki:3.7.6}").is_ok());
        assert!(check_image_pinned("grafana/loki").is_err());
        assert!(check_image_pinned("grafana/loki:latest").is_err());
        assert!(check_image_pinned("${X}").is_err());
        assert!(check_image_pinned("localhost:5000/loki").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_secs("24h"), Some(86400));
        assert_eq!(parse_duration_secs("1h30m"), Some(5400));
        assert_eq!(parse_duration_secs("5x"), None);
    }

    #[test]
    fn edited_files_with_problems_are_reported() {
        let dir = installed_with_edits(&[
            (
                "config/otel-collector.yaml",
                "convert_sum_to_gauge()",
                "keep_keys(attributes, [])",
            ),
            (
                COMPOSE_FILE,
                "\"127.0.0.1:${CLAUDE_TELEMETRY_LOKI_PORT",
                "\"${CLAUDE_TELEMETRY_LOKI_PORT",
            ),
        ]);
        std::fs::remove_file(dir.path().join("config/loki.yaml")).expect("remove");
        let all = findings_in(dir.path());
        assert!(all.contains("convert_sum_to_gauge"), "{all}");
        assert!(all.contains("beyond 127.0.0.1"), "{all}");
        assert!(all.contains("../config/loki.yaml"), "{all}");
    }

    /// The embedded files installed in a temp dir with each `(file, from, to)` edit applied; an
    /// edit whose `from` is not in the file fails the test, so a stale edit cannot quietly
    /// validate the unedited files.
    fn installed_with_edits(edits: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        super::super::files::install(dir.path()).expect("install");
        for (file, from, to) in edits {
            let path = dir.path().join(file);
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.contains(from), "{file} no longer holds {from:?}");
            std::fs::write(&path, text.replace(from, to)).expect("write");
        }
        dir
    }

    /// Every finding of `validate` on the files in `dir`, one per line.
    fn findings_in(dir: &Path) -> String {
        validate(&Source::Dir(dir.to_path_buf()))
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// [`findings_in`] the embedded files after the edits.
    fn findings_after_edits(edits: &[(&str, &str, &str)]) -> String {
        findings_in(installed_with_edits(edits).path())
    }

    fn dashboard(panel: Value, vars: Value) -> Value {
        serde_json::json!({
            "uid": "t", "schemaVersion": 41,
            "panels": [panel],
            "templating": {"list": vars},
        })
    }

    fn model_var() -> Value {
        serde_json::json!([{"name": "model", "type": "query",
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "query": {"query": "label_values(claude_code_token_usage_tokens, model)"}}])
    }

    fn stat(expr: &str) -> Value {
        serde_json::json!({"type": "stat", "title": "Cost",
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "targets": [{"expr": expr, "refId": "A"}]})
    }

    #[test]
    fn regex_format_inside_double_quotes_is_reported_and_backquotes_pass() {
        let bad =
            r#"sum(sum_over_time(claude_code_cost_usage_USD{model=~"${model:regex}"}[$__range]))"#;
        let p = check_dashboard(&dashboard(stat(bad), model_var()));
        assert!(
            p.iter()
                .any(|p| p.contains("${model:regex}") && p.contains("one backslash")),
            "{p:?}"
        );
        let good =
            r#"sum(sum_over_time(claude_code_cost_usage_USD{model=~`${model:regex}`}[$__range]))"#;
        let p = check_dashboard(&dashboard(stat(good), model_var()));
        assert!(p.is_empty(), "{p:?}");
        let logql = r#"{service_name="claude-code"} | model=~"${model:regex}""#;
        assert_eq!(regex_format_in_double_quotes(logql).len(), 1);
    }

    #[test]
    fn sub_minute_increase_window_is_reported() {
        let mut panel = stat(
            r#"sum(increase(claude_code_cost_usage_USD{model=~`${model:regex}`}[$__interval]))"#,
        );
        let p = check_dashboard(&dashboard(panel.clone(), model_var()));
        assert!(p.iter().any(|p| p.contains("sub-minute")), "{p:?}");
        panel["interval"] = Value::from("1m");
        let p = check_dashboard(&dashboard(panel.clone(), model_var()));
        assert!(!p.iter().any(|p| p.contains("sub-minute")), "{p:?}");
        panel["targets"][0]["expr"] =
            Value::from(r#"sum(rate(claude_code_cost_usage_USD{model=~`${model:regex}`}[30s]))"#);
        let p = check_dashboard(&dashboard(panel, model_var()));
        assert!(p.iter().any(|p| p.contains("sub-minute")), "{p:?}");
    }

    #[test]
    fn unused_variable_is_reported() {
        let panel = stat(r#"sum(sum_over_time(claude_code_cost_usage_USD[$__range]))"#);
        let p = check_dashboard(&dashboard(panel, model_var()));
        assert!(
            p.iter().any(|p| p.contains("variable `model` is not used")),
            "{p:?}"
        );
    }

    #[test]
    fn datasource_uid_that_is_not_provisioned_is_reported() {
        let mut panel = stat(
            r#"sum(sum_over_time(claude_code_cost_usage_USD{model=~`${model:regex}`}[$__range]))"#,
        );
        panel["datasource"]["uid"] = Value::from("prom-old");
        let p = check_dashboard_with(
            &dashboard(panel, model_var()),
            &ProvisionedDatasource::stack_defaults(),
        );
        assert!(
            p.iter()
                .any(|p| p.contains("`prom-old`, which is not provisioned")),
            "{p:?}"
        );
        // A datasource renamed in provisioning makes the (unchanged) dashboards fail.
        let all = findings_after_edits(&[(
            "config/grafana/provisioning/datasources/datasources.yaml",
            "uid: loki",
            "uid: loki-main",
        )]);
        assert!(all.contains("`loki`, which is not provisioned"), "{all}");
    }

    #[test]
    fn rate_limit_gauges_are_known_and_a_misspelt_one_is_reported() {
        let ok = "max by (window) (last_over_time(claude_code_rate_limit_used_percent[$__range]) unless on (session_id, window) (last_over_time(claude_code_rate_limit_resets_at_seconds[$__range]) <= time()))";
        assert!(
            check_promql_names(ok).is_empty(),
            "{:?}",
            check_promql_names(ok)
        );
        // The collector adds the `_seconds` unit suffix: the bare OTel name stores nothing.
        let p = check_promql_names("max(claude_code_rate_limit_resets_at[$__range])");
        assert_eq!(p, vec!["unknown metric `claude_code_rate_limit_resets_at`"]);
    }

    #[test]
    fn alert_list_reading_a_datasource_that_is_not_provisioned_is_reported() {
        let list = |ds: Value| {
            serde_json::json!({"type": "alertlist", "title": "Alerts",
                "options": {"datasource": ds,
                    "stateFilter": {"firing": true, "pending": true, "normal": false}}})
        };
        let provisioned = ProvisionedDatasource::stack_defaults();
        for ok in [
            Value::from("Prometheus"),
            Value::Null,
            Value::from(GRAFANA_RULES_DATASOURCE_NAME),
        ] {
            let p = check_alert_list(&list(ok.clone()), &provisioned);
            assert!(p.is_empty(), "{ok}: {p:?}");
        }
        // Grafana matches the option against names: the uid finds nothing.
        let p = check_dashboard(&dashboard(list(Value::from("prometheus")), Value::Null));
        assert!(
            p.iter()
                .any(|p| p.contains("`prometheus`, which is not provisioned")
                    && p.contains("uid of `Prometheus`")),
            "{p:?}"
        );
        let p = check_alert_list(&list(Value::from("Mimir")), &provisioned);
        assert!(
            p.iter()
                .any(|p| p.contains("`Mimir`, which is not provisioned")),
            "{p:?}"
        );
        let mut silent = list(Value::Null);
        silent["options"]["stateFilter"]["firing"] = Value::Bool(false);
        silent["options"]["stateFilter"]["pending"] = Value::Bool(false);
        let p = check_alert_list(&silent, &provisioned);
        assert!(
            p.iter().any(|p| p.contains("neither firing nor pending")),
            "{p:?}"
        );
        // The shipped overview's "Alerts" panel fails once its datasource is renamed in
        // provisioning, or stops managing alerts.
        let clean = findings_after_edits(&[]);
        assert!(!clean.contains("alert list"), "{clean}");
        let renamed = findings_after_edits(&[(
            "config/grafana/provisioning/datasources/datasources.yaml",
            "name: Prometheus",
            "name: Prometheus 3",
        )]);
        assert!(
            renamed.contains(
                "claude-code-overview.json: panel `\"Alerts\"`: alert list reads datasource `Prometheus`, which is not provisioned"
            ),
            "{renamed}"
        );
        let unmanaged = findings_after_edits(&[(
            "config/grafana/provisioning/datasources/datasources.yaml",
            "manageAlerts: true",
            "manageAlerts: false",
        )]);
        assert!(
            unmanaged.contains("`jsonData.manageAlerts: false`"),
            "{unmanaged}"
        );
    }

    #[test]
    fn loki_default_index_labels_include_the_launch_id_unless_ignored() {
        let doc = |text: &str| {
            YamlLoader::load_from_str(text)
                .expect("yaml")
                .swap_remove(0)
        };
        let default = loki_index_resource_attributes(&doc("{}"));
        assert!(default.iter().any(|l| l == "service.instance.id"));
        // A later structured_metadata rule does not beat Loki's prepended defaults.
        let later = doc(
            "resource_attributes:\n  attributes_config:\n    - action: structured_metadata\n      attributes: [service.instance.id]\n",
        );
        assert!(
            loki_index_resource_attributes(&later)
                .iter()
                .any(|l| l == "service.instance.id")
        );
        let ignored = doc(
            "resource_attributes:\n  ignore_defaults: true\n  attributes_config:\n    - action: index_label\n      attributes: [service.name]\n",
        );
        assert_eq!(
            loki_index_resource_attributes(&ignored),
            vec!["service.name"]
        );
    }

    #[test]
    fn an_unmounted_rules_file_and_a_rule_without_expr_are_reported() {
        let all = findings_after_edits(&[
            (
                COMPOSE_FILE,
                "      - ../config/prometheus-rules.yml:/etc/prometheus/prometheus-rules.yml:ro\n",
                "",
            ),
            (
                "config/prometheus-rules.yml",
                "        expr: |\n          max by (window) (",
                "        exp: |\n          max by (window) (",
            ),
        ]);
        assert!(
            all.contains("does not mount `../config/prometheus-rules.yml"),
            "{all}"
        );
        assert!(
            all.contains("groups[1].rules[0] needs `alert` (or `record`) and `expr`"),
            "{all}"
        );
    }

    #[test]
    fn a_pipeline_through_a_defined_connector_is_valid_and_an_undefined_one_is_not() {
        let all = findings_after_edits(&[(
            "config/otel-collector.yaml",
            "exporters: [otlp_http/loki, count]",
            "exporters: [otlp_http/loki, count/missing]",
        )]);
        assert!(
            all.contains("uses undefined exporters `count/missing`"),
            "{all}"
        );
        assert!(!all.contains("`count`"), "{all}");
    }

    #[test]
    fn prometheus_without_out_of_order_window_is_reported() {
        let all = findings_after_edits(&[(
            "config/prometheus.yml",
            "out_of_order_time_window: 30d",
            "out_of_order_time_window: 10m",
        )]);
        assert!(all.contains("out_of_order_time_window"), "{all}");
    }

    #[test]
    fn deprecated_resource_conversion_and_an_indexed_launch_id_are_reported() {
        let all = findings_after_edits(&[
            (
                "config/otel-collector.yaml",
                "    target_info:\n",
                "    resource_to_telemetry_conversion:\n      enabled: true\n    target_info:\n",
            ),
            (
                "config/loki.yaml",
                "ignore_defaults: true",
                "ignore_defaults: false",
            ),
        ]);
        assert!(
            all.contains("`resource_to_telemetry_conversion` is deprecated"),
            "{all}"
        );
        assert!(
            all.contains("`service.instance.id` (one per launch)"),
            "{all}"
        );
    }

    #[test]
    fn retention_that_differs_between_prometheus_and_loki_is_reported() {
        let all = findings_after_edits(&[(
            "config/loki.yaml",
            "retention_period: ${CLAUDE_TELEMETRY_RETENTION:-90d}",
            "retention_period: 2160h",
        )]);
        assert!(all.contains("retention differs"), "{all}");
    }
}
