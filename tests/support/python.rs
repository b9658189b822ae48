//! The OpenTelemetry Python SDK as an independent OTLP sender: unlike claude it can gzip, so
//! it exercises the receive paths claude never uses.

use std::path::PathBuf;
use std::process::Command;

use super::tool_from_env;

/// Environment variable naming the Python interpreter that has the OpenTelemetry SDK.
pub const PYTHON_ENV: &str = "CLAUDE_TELEMETRY_TEST_PYTHON";

/// The Python interpreter with `opentelemetry-sdk` and `opentelemetry-exporter-otlp`.
pub fn python_bin() -> PathBuf {
    tool_from_env(
        PYTHON_ENV,
        "Python with opentelemetry-sdk and opentelemetry-exporter-otlp",
    )
}

/// OTLP transport of the Python exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyProtocol {
    Grpc,
    HttpProtobuf,
}

const SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
protocol, endpoint, gzip, name, value = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], float(sys.argv[5])
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from grpc import Compression
    exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True,
                                  compression=Compression.Gzip if gzip else Compression.NoCompression)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http import Compression
    exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics",
                                  compression=Compression.Gzip if gzip else Compression.NoCompression)
from opentelemetry.sdk.metrics.export import MetricExportResult
results = []
export = exporter.export
def recording_export(*args, **kwargs):
    result = export(*args, **kwargs)
    results.append(result == MetricExportResult.SUCCESS)
    return result
exporter.export = recording_export
# One export, at shutdown (a flush before it would send the cumulative point twice).
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600000)
provider = MeterProvider(metric_readers=[reader])
provider.get_meter("claude-telemetry-tests").create_counter(name).add(value, {"sender": "python"})
provider.shutdown()
sys.exit(0 if results and all(results) else 1)
"#;

/// Sends one counter point `name = value` (attribute `sender=python`) to `endpoint` with the
/// Python SDK; returns whether the SDK reported a successful export.
pub fn send_metric(
    endpoint: &str,
    protocol: PyProtocol,
    gzip: bool,
    name: &str,
    value: f64,
) -> bool {
    let protocol = match protocol {
        PyProtocol::Grpc => "grpc",
        PyProtocol::HttpProtobuf => "http",
    };
    let output = Command::new(python_bin())
        .args([
            "-c",
            SCRIPT,
            protocol,
            endpoint,
            if gzip { "1" } else { "0" },
            name,
        ])
        .arg(value.to_string())
        .env("OTEL_SDK_DISABLED", "false")
        .output()
        .expect("run the Python OpenTelemetry SDK");
    if !output.status.success() {
        eprintln!(
            "python OTLP sender failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status.success()
}
