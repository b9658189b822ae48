//! The relay's policy stage: privacy, cardinality and resource rules applied to every OTLP
//! request between receive and the outbox, whatever claude was told to send.
//!
//! Pure functions on decoded messages: no I/O after [`LaunchContext::detect`]. A [`Policy`] is
//! compiled once per launch from the effective settings and shared by the receivers
//! (`Arc<Policy>`, it is `Send + Sync`).
//!
//! Order per request: privacy first (identifiers hashed or removed, text replaced, patterns
//! redacted), then cardinality (configured attributes removed from metric points, points that
//! became identical merged), then resource stamping (so the team's own `[resource]` values are
//! never redacted); the `[resource].attributes` values also replace the copies claude puts on
//! metric points, events and spans.

mod cardinality;
pub mod explain;
mod privacy;
mod project;
mod redact;
mod resource;
mod secret;

use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

// The public surface the launcher, receivers and `config` use.
pub use cardinality::{Cardinality, merge_identical_points};
pub use explain::explain;
pub use privacy::{Privacy, PrivacyError, RecordContext, RequestScratch};
pub use project::{ProjectInfo, detect_project};
#[cfg(test)]
use redact::REDACTED;
pub use resource::{ResourceStamp, new_service_instance_id};
pub use secret::{SecretError, load_or_create_secret};

use crate::otlp::ExportRequest;
use crate::settings::policy::{IdentifierMode, PolicySettings};

/// Facts about this launch that the policy stamps or keys with, computed once before claude
/// starts.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchContext {
    /// `project.name` value, when detected and enabled.
    pub project_name: Option<String>,
    /// `vcs.ref.head.name` value, when detected and enabled.
    pub git_branch: Option<String>,
    /// This launch's `service.instance.id`, when enabled.
    pub service_instance_id: Option<String>,
    /// HMAC key for identifier pseudonyms: the team key's bytes or the installation secret;
    /// empty when identifiers are not hashed.
    pub hash_key: Vec<u8>,
}

impl std::fmt::Debug for LaunchContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchContext")
            .field("project_name", &self.project_name)
            .field("git_branch", &self.git_branch)
            .field("service_instance_id", &self.service_instance_id)
            .field("hash_key", &format_args!("<{} bytes>", self.hash_key.len()))
            .finish()
    }
}

/// Why the policy could not be prepared; each aborts the launch before claude starts.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The installation secret could not be read or created.
    #[error("identifier hashing secret: {0}")]
    Secret(#[from] SecretError),
    /// No random source for `service.instance.id`.
    #[error("cannot create service.instance.id: {0}")]
    Random(std::io::Error),
    /// `[privacy]` does not compile.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl LaunchContext {
    /// Reads what the enabled rules need: the project from `cwd`'s `.git` (no git process),
    /// a fresh `service.instance.id`, and the hashing key (team key, else the installation
    /// secret in `data_dir`, created 0600 on first use).
    pub fn detect(
        settings: &PolicySettings,
        cwd: &Path,
        data_dir: &Path,
    ) -> Result<Self, PolicyError> {
        let r = &settings.resource;
        let project = if r.project_name || r.git_branch {
            detect_project(cwd)
        } else {
            ProjectInfo::default()
        };
        let service_instance_id = if r.service_instance_id {
            Some(new_service_instance_id().map_err(PolicyError::Random)?)
        } else {
            None
        };
        let hash_key = match (&settings.privacy.identifiers, &settings.privacy.team_key) {
            (IdentifierMode::Hash, Some(team)) => team.as_bytes().to_vec(),
            (IdentifierMode::Hash, None) => load_or_create_secret(data_dir)?.to_vec(),
            _ => Vec::new(),
        };
        Ok(LaunchContext {
            project_name: project.name.filter(|_| r.project_name),
            git_branch: project.branch.filter(|_| r.git_branch),
            service_instance_id,
            hash_key,
        })
    }
}

/// The compiled policy: everything [`Policy::apply`] needs, nothing it must look up.
#[derive(Debug, Clone)]
pub struct Policy {
    privacy: Privacy,
    cardinality: Cardinality,
    resource: ResourceStamp,
}

impl Policy {
    /// Compiles the effective settings (already validated and merged with the managed policy)
    /// with this launch's context.
    pub fn new(settings: &PolicySettings, ctx: &LaunchContext) -> Result<Self, PolicyError> {
        Ok(Policy {
            privacy: Privacy::with_allowed(
                &settings.privacy,
                &ctx.hash_key,
                settings.resource.attributes.keys().map(String::as_str),
            )?,
            cardinality: Cardinality::new(&settings.cardinality),
            resource: ResourceStamp::new(
                &settings.resource,
                ctx.project_name.as_deref(),
                ctx.git_branch.as_deref(),
                ctx.service_instance_id.as_deref(),
            ),
        })
    }

    /// The keyed pseudonym this policy gives an identifier (for `config` and tests).
    #[cfg(test)]
    pub fn pseudonym(&self, value: &str) -> Option<String> {
        self.privacy.pseudonym(value)
    }

    /// The unknown keys this policy lets through (`privacy.allow_attributes` and the
    /// `[resource].attributes` keys), for `config --explain`.
    pub fn allowed_unknown_keys(&self) -> Vec<String> {
        self.privacy.allowed_keys()
    }

    /// Applies every rule to one request in place. Returns the unknown attribute keys whose
    /// text was withheld (names only), for `doctor` to list.
    pub fn apply(&self, request: &mut ExportRequest) -> Vec<String> {
        let mut scratch = RequestScratch::default();
        let cache = &mut scratch;
        match request {
            ExportRequest::Metrics(r) => {
                for rm in &mut r.resource_metrics {
                    self.apply_resource(&mut rm.resource, cache);
                    for sm in &mut rm.scope_metrics {
                        self.apply_scope(&mut sm.scope, cache);
                        for metric in &mut sm.metrics {
                            self.apply_metric(metric, cache);
                        }
                    }
                }
            }
            ExportRequest::Logs(r) => {
                for rl in &mut r.resource_logs {
                    self.apply_resource(&mut rl.resource, cache);
                    for sl in &mut rl.scope_logs {
                        self.apply_scope(&mut sl.scope, cache);
                        for record in &mut sl.log_records {
                            self.apply_log_record(record, cache);
                        }
                    }
                }
            }
            ExportRequest::Traces(r) => {
                for rs in &mut r.resource_spans {
                    self.apply_resource(&mut rs.resource, cache);
                    for ss in &mut rs.scope_spans {
                        self.apply_scope(&mut ss.scope, cache);
                        for span in &mut ss.spans {
                            self.apply_span(span, cache);
                        }
                    }
                }
            }
        }
        scratch.into_withheld()
    }

    fn apply_resource(&self, resource: &mut Option<Resource>, cache: &mut RequestScratch) {
        if let Some(r) = resource.as_mut() {
            self.privacy
                .apply_attributes(&mut r.attributes, RecordContext::default(), cache);
        }
        self.resource.apply(resource);
    }

    fn apply_scope(&self, scope: &mut Option<InstrumentationScope>, cache: &mut RequestScratch) {
        if let Some(s) = scope.as_mut() {
            self.privacy
                .apply_attributes(&mut s.attributes, RecordContext::default(), cache);
        }
    }

    fn apply_metric(&self, metric: &mut Metric, cache: &mut RequestScratch) {
        let ctx = RecordContext::default();
        self.privacy
            .apply_attributes(&mut metric.metadata, ctx, cache);
        let Some(data) = metric.data.as_mut() else {
            return;
        };
        let mergeable = matches!(data, Data::Sum(_) | Data::Gauge(_) | Data::Histogram(_));
        let mut changed = false;
        let mut visit = |attrs: &mut Vec<KeyValue>, exemplar_attrs: Vec<&mut Vec<KeyValue>>| {
            changed |= self.privacy.apply_attributes(attrs, ctx, cache);
            if mergeable {
                changed |= self.cardinality.drop_attributes(attrs);
            }
            // A changed value can make two points identical, like a removed attribute.
            changed |= self.resource.override_attributes(attrs);
            for e in exemplar_attrs {
                self.privacy.apply_attributes(e, ctx, cache);
            }
        };
        macro_rules! visit_points {
            ($points:expr) => {
                for p in $points.iter_mut() {
                    let ex = p
                        .exemplars
                        .iter_mut()
                        .map(|e| &mut e.filtered_attributes)
                        .collect();
                    visit(&mut p.attributes, ex);
                }
            };
        }
        match data {
            Data::Sum(s) => visit_points!(s.data_points),
            Data::Gauge(g) => visit_points!(g.data_points),
            Data::Histogram(h) => visit_points!(h.data_points),
            Data::ExponentialHistogram(h) => visit_points!(h.data_points),
            Data::Summary(s) => {
                for p in s.data_points.iter_mut() {
                    visit(&mut p.attributes, Vec::new());
                }
            }
        }
        if changed && mergeable {
            merge_identical_points(data);
        }
    }

    fn apply_log_record(&self, record: &mut LogRecord, cache: &mut RequestScratch) {
        let ctx = log_context(record);
        self.privacy
            .apply_attributes(&mut record.attributes, ctx, cache);
        self.resource.override_attributes(&mut record.attributes);
        if let Some(body) = record.body.as_mut() {
            self.privacy.apply_body(body, cache);
        }
    }

    fn apply_span(&self, span: &mut Span, cache: &mut RequestScratch) {
        let span_ctx = RecordContext::from_name(&span.name);
        self.privacy
            .apply_attributes(&mut span.attributes, span_ctx, cache);
        self.resource.override_attributes(&mut span.attributes);
        for event in &mut span.events {
            let own = RecordContext::from_name(&event.name);
            let ctx = RecordContext {
                survey: own.survey,
                tool: own.tool || span_ctx.tool,
            };
            self.privacy
                .apply_attributes(&mut event.attributes, ctx, cache);
        }
        for link in &mut span.links {
            self.privacy
                .apply_attributes(&mut link.attributes, RecordContext::default(), cache);
        }
    }
}

/// The event a log record reports: `event.name` attribute (claude), else the proto field.
fn log_context(record: &LogRecord) -> RecordContext {
    let from_attr = record.attributes.iter().find_map(|kv| {
        if kv.key != "event.name" {
            return None;
        }
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    });
    match from_attr {
        Some(name) => RecordContext::from_name(name),
        None => RecordContext::from_name(&record.event_name),
    }
}

#[cfg(test)]
mod tests;
