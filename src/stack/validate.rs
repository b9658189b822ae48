//! `validate`: checks the stack's files before Docker ever sees them.
//!
//! What is checked: every YAML and JSON file parses; the keys the stack depends on are there
//! (collector pipelines and the components they name, `delta_to_cumulative.max_stale` ≥ the
//! prometheus exporter's `metric_expiration`, logs to Loki's `/otlp`, `health_check`; Prometheus
//! scrape with `honor_labels`; Loki TSDB schema v13 with structured metadata; datasource uids);
//! the compose file publishes ports on 127.0.0.1 only, pins every image tag and mounts only
//! files that exist; dashboards use schemaVersion 39–41, React panel types, known datasource
//! uids, and only the metric and label names of [`crate::definitions`]. LogQL is checked
//! structurally (see [`check_logql`]); full PromQL parsing is left to promtool in the tests.

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
    };
    check_compose(&mut c);
    check_collector(&mut c);
    check_prometheus(&mut c);
    check_loki(&mut c);
    check_grafana_provisioning(&mut c);
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
    let max_stale = str_of(&doc["processors"]["delta_to_cumulative"]["max_stale"]);
    let expiration = str_of(&doc["exporters"]["prometheus"]["metric_expiration"]);
    match (
        max_stale.and_then(parse_duration_secs),
        expiration.and_then(parse_duration_secs),
    ) {
        (Some(stale), Some(exp)) if exp <= stale => {}
        (Some(_), Some(_)) => c.fail(
            rel,
            "prometheus `metric_expiration` exceeds delta_to_cumulative `max_stale`",
        ),
        _ => c.fail(
            rel,
            "delta_to_cumulative `max_stale` and prometheus `metric_expiration` must be set",
        ),
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
                if doc[section][component].is_badvalue() {
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
    if !metrics_processors.contains(&"delta_to_cumulative") {
        c.fail(rel, "the metrics pipeline must convert delta to cumulative");
    }
}

fn check_prometheus(c: &mut Checker<'_>) {
    let rel = "config/prometheus.yml";
    let Some(doc) = c.yaml(rel) else { return };
    let Some(scrapes) = doc["scrape_configs"].as_vec().filter(|v| !v.is_empty()) else {
        c.fail(rel, "no scrape_configs");
        return;
    };
    if !scrapes
        .iter()
        .any(|s| s["honor_labels"].as_bool() == Some(true))
    {
        c.fail(rel, "the collector scrape needs `honor_labels: true`");
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
}

fn check_grafana_provisioning(c: &mut Checker<'_>) {
    let rel = "config/grafana/provisioning/datasources/datasources.yaml";
    if let Some(doc) = c.yaml(rel) {
        let uids: Vec<&str> = doc["datasources"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|d| str_of(&d["uid"]))
            .collect();
        for uid in definitions::datasource::ALL {
            if !uids.contains(uid) {
                c.fail(rel, format!("datasource uid `{uid}` missing"));
            }
        }
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
    for problem in check_dashboard(&dashboard) {
        c.fail(rel, problem);
    }
}

/// Every problem of one dashboard document.
pub fn check_dashboard(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match dashboard["schemaVersion"].as_u64() {
        Some(v) if (39..=41).contains(&v) => {}
        other => problems.push(format!("schemaVersion {other:?} is not 39–41")),
    }
    if dashboard["uid"].as_str().is_none_or(str::is_empty) {
        problems.push("no uid".to_string());
    }
    fn walk(panels: &Value, problems: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            let t = panel["type"].as_str().unwrap_or("");
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
                    && !definitions::datasource::ALL.contains(&uid)
                {
                    problems.push(format!(
                        "panel `{}` uses unknown datasource uid `{uid}`",
                        panel["title"]
                    ));
                }
            }
            walk(&panel["panels"], problems);
        }
    }
    walk(&dashboard["panels"], &mut problems);
    for q in dashboard_queries(dashboard) {
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
            r#"sum by (tem_id) (increase(claude_code_cost_usd_total{model=~"${model:regex}"}[$__range]))"#,
        );
        assert!(
            p.iter().any(|p| p.contains("claude_code_cost_usd_total")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("tem_id")), "{p:?}");
        assert!(
            check_promql_names(
                r#"sum(increase(claude_code_cost_usage_USD_total{model=~".*"}[1h]))"#
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
        let dir = tempfile::tempdir().expect("tempdir");
        super::super::files::install(dir.path()).expect("install");
        let collector = dir.path().join("config/otel-collector.yaml");
        let text = std::fs::read_to_string(&collector).expect("read");
        std::fs::write(
            &collector,
            text.replace("metric_expiration: 24h", "metric_expiration: 48h"),
        )
        .expect("write");
        let compose = dir.path().join(COMPOSE_FILE);
        let text = std::fs::read_to_string(&compose).expect("read");
        std::fs::write(
            &compose,
            text.replace(
                "\"127.0.0.1:${CLAUDE_TELEMETRY_LOKI_PORT",
                "\"${CLAUDE_TELEMETRY_LOKI_PORT",
            ),
        )
        .expect("write");
        std::fs::remove_file(dir.path().join("config/loki.yaml")).expect("remove");
        let report = validate(&Source::Dir(dir.path().to_path_buf()));
        let all = report
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("metric_expiration"), "{all}");
        assert!(all.contains("beyond 127.0.0.1"), "{all}");
        assert!(all.contains("../config/loki.yaml"), "{all}");
    }
}
