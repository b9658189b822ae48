//! Talking to the Docker engine (bollard): is it there, which containers of the stack exist,
//! in which state and health, on which ports, and their logs.
//!
//! Every failure to reach Docker is turned into one [`DockerError`] whose message says what to
//! do, because "Docker is not running" is the most common reason the stack is down and the
//! user should not have to decode a hyper error chain to learn it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use tokio_stream::{StreamExt, StreamMap};

/// Label compose puts on every container of a project.
const PROJECT_LABEL: &str = "com.docker.compose.project";
/// Label compose puts on every container with its service name.
const SERVICE_LABEL: &str = "com.docker.compose.service";

/// Why Docker cannot be used; the message tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No `docker` command and no engine socket.
    #[error(
        "Docker is not installed (no `docker` command on PATH and no engine at {host}). \
         Install Docker Engine with the compose v2 plugin (or Docker Desktop), then run `claude-telemetry up`."
    )]
    NotInstalled {
        /// Where the engine was looked for.
        host: String,
    },
    /// The engine does not answer.
    #[error(
        "The Docker daemon is not running or not answering at {host} ({detail}). \
         Start it (`sudo systemctl start docker`, or open Docker Desktop), or point DOCKER_HOST at a running engine, then retry."
    )]
    DaemonDown {
        /// Where the engine was looked for.
        host: String,
        /// The underlying reason, shortened.
        detail: String,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "Permission denied on the Docker socket {host}. Add yourself to the `docker` group \
         (`sudo usermod -aG docker $USER`, then log in again) or use rootless Docker, then retry."
    )]
    PermissionDenied {
        /// The socket.
        host: String,
    },
    /// `docker compose` (v2) is missing.
    #[error(
        "`docker compose` (Compose v2) is not available: {detail}. Install the Docker Compose v2 plugin \
         (package `docker-compose-plugin`, or Docker Desktop), then retry."
    )]
    ComposeMissing {
        /// What running it said.
        detail: String,
    },
    /// Any other engine error.
    #[error("Docker engine error: {0}")]
    Api(String),
}

/// The engine address in effect: `DOCKER_HOST`, else the default unix socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// The unix socket path of [`docker_host`], if it is a unix socket.
pub fn socket_path() -> Option<PathBuf> {
    docker_host().strip_prefix("unix://").map(PathBuf::from)
}

/// Whether a `docker` executable is on PATH.
pub fn docker_cli_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join("docker");
            std::fs::metadata(&candidate).is_ok_and(|m| m.is_file())
        })
    })
}

/// Turns a bollard error into a [`DockerError`] with advice.
pub fn classify(err: &bollard::errors::Error) -> DockerError {
    let host = docker_host();
    if let bollard::errors::Error::SocketNotFoundError(_) = err {
        return if docker_cli_on_path() {
            DockerError::DaemonDown {
                host,
                detail: "the socket does not exist".to_string(),
            }
        } else {
            DockerError::NotInstalled { host }
        };
    }
    if let bollard::errors::Error::RequestTimeoutError = err {
        return DockerError::DaemonDown {
            host,
            detail: "timed out".to_string(),
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied => DockerError::PermissionDenied { host },
                std::io::ErrorKind::NotFound if !docker_cli_on_path() => {
                    DockerError::NotInstalled { host }
                }
                _ => DockerError::DaemonDown {
                    host,
                    detail: io.to_string(),
                },
            };
        }
        source = e.source();
    }
    match err {
        bollard::errors::Error::HyperLegacyError { .. } => DockerError::DaemonDown {
            host,
            detail: err.to_string(),
        },
        _ => DockerError::Api(err.to_string()),
    }
}

/// Connects to `DOCKER_HOST` (unix socket or tcp; default the local socket) and negotiates the API version (old engines reject newer clients), bounded by
/// `timeout` so a hung daemon does not hang the command.
pub async fn connect(timeout: Duration) -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults().map_err(|e| classify(&e))?;
    match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(DockerError::DaemonDown {
            host: docker_host(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}

/// One container of the stack as the engine reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerInfo {
    /// The compose service name.
    pub service: String,
    /// The container name.
    pub name: String,
    /// `running`, `exited`, `restarting`, …
    pub state: String,
    /// Docker's health (`healthy`, `unhealthy`, `starting`) when the image defines a check.
    pub health: Option<String>,
    /// Published ports as `ip:host->container/proto`.
    pub ports: Vec<String>,
}

fn health_from_status(status: &str) -> Option<String> {
    if status.contains("(healthy)") {
        Some("healthy".to_string())
    } else if status.contains("(unhealthy)") {
        Some("unhealthy".to_string())
    } else if status.contains("(health: starting)") {
        Some("starting".to_string())
    } else {
        None
    }
}

/// Every container (running or not) of compose project `project`, sorted by service.
pub async fn project_containers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<ContainerInfo>, DockerError> {
    let mut filters = HashMap::new();
    filters.insert("label", vec![format!("{PROJECT_LABEL}={project}")]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| classify(&e))?;
    let mut out: Vec<ContainerInfo> = summaries
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            let status = c.status.unwrap_or_default();
            let mut ports: Vec<String> = c
                .ports
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| {
                    let public = p.public_port?;
                    let ip = p.ip.unwrap_or_default();
                    let proto = p
                        .typ
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "tcp".to_string());
                    Some(format!("{ip}:{public}->{}/{proto}", p.private_port))
                })
                .collect();
            ports.sort();
            ports.dedup();
            ContainerInfo {
                service: labels
                    .get(SERVICE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| name.clone()),
                name,
                state: c
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".to_string()),
                health: health_from_status(&status),
                ports,
            }
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

/// Writes the logs of `containers` to `out`, each line prefixed with its service; with
/// `follow`, keeps streaming until every container stops (or the user interrupts).
pub async fn write_logs(
    docker: &Docker,
    containers: &[ContainerInfo],
    follow: bool,
    tail: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), DockerError> {
    let mut streams = StreamMap::new();
    let width = containers
        .iter()
        .map(|c| c.service.len())
        .max()
        .unwrap_or(0);
    for c in containers {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(tail)
            .build();
        streams.insert(
            c.service.clone(),
            Box::pin(docker.logs(&c.name, Some(options))),
        );
    }
    while let Some((service, item)) = streams.next().await {
        let chunk = match item {
            Ok(LogOutput::StdOut { message })
            | Ok(LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => message,
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => return Err(classify(&e)),
        };
        let text = String::from_utf8_lossy(&chunk);
        for line in text.lines() {
            if writeln!(out, "{service:<width$} | {line}").is_err() {
                return Ok(()); // the reader went away (e.g. `| head`)
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_read_from_the_status_text() {
        assert_eq!(
            health_from_status("Up 3 minutes (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(health_from_status("Up 3 minutes"), None);
    }

    #[test]
    fn messages_say_what_to_do() {
        let down = DockerError::DaemonDown {
            host: "unix:///x.sock".into(),
            detail: "connection refused".into(),
        };
        assert!(down.to_string().contains("Start it"));
        let denied = DockerError::PermissionDenied {
            host: "unix:///x.sock".into(),
        };
        assert!(denied.to_string().contains("docker` group"));
        let missing = DockerError::NotInstalled {
            host: "unix:///x.sock".into(),
        };
        assert!(missing.to_string().contains("Install Docker"));
    }
}
