//! Running `docker compose` (v2) on the compose file: the single source of truth for what runs.
//!
//! Settings reach the compose file only through environment variables it interpolates
//! (`CLAUDE_TELEMETRY_*_IMAGE`, `…_PORT`), so the file stays readable and a user can run
//! `docker compose` on it by hand with the same result.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::settings::stack::StackSettings;

use super::docker::DockerError;
use super::files::COMPOSE_FILE;

/// One compose project: the file, the project name and the variables the file interpolates.
#[derive(Debug, Clone)]
pub struct Compose {
    file: PathBuf,
    project: String,
    env: Vec<(String, String)>,
}

/// The variables the compose file reads, from settings.
pub fn compose_env(settings: &StackSettings) -> Vec<(String, String)> {
    let p = &settings.ports;
    let mut env = vec![
        (
            "CLAUDE_TELEMETRY_OTLP_GRPC_PORT".to_string(),
            p.otlp_grpc.to_string(),
        ),
        (
            "CLAUDE_TELEMETRY_OTLP_HTTP_PORT".to_string(),
            p.otlp_http.to_string(),
        ),
        (
            "CLAUDE_TELEMETRY_COLLECTOR_HEALTH_PORT".to_string(),
            p.collector_health.to_string(),
        ),
        (
            "CLAUDE_TELEMETRY_PROMETHEUS_PORT".to_string(),
            p.prometheus.to_string(),
        ),
        ("CLAUDE_TELEMETRY_LOKI_PORT".to_string(), p.loki.to_string()),
        (
            "CLAUDE_TELEMETRY_GRAFANA_PORT".to_string(),
            p.grafana.to_string(),
        ),
    ];
    let images = &settings.images;
    for (var, image) in [
        ("CLAUDE_TELEMETRY_COLLECTOR_IMAGE", &images.collector),
        ("CLAUDE_TELEMETRY_PROMETHEUS_IMAGE", &images.prometheus),
        ("CLAUDE_TELEMETRY_LOKI_IMAGE", &images.loki),
        ("CLAUDE_TELEMETRY_GRAFANA_IMAGE", &images.grafana),
    ] {
        if let Some(image) = image {
            env.push((var.to_string(), image.clone()));
        }
    }
    env
}

impl Compose {
    /// The project written in `data_dir` with `settings`.
    pub fn new(data_dir: &Path, settings: &StackSettings) -> Self {
        Self {
            file: data_dir.join(COMPOSE_FILE),
            project: settings.project_name.clone(),
            env: compose_env(settings),
        }
    }

    /// The compose file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// `docker compose -f <file> -p <project> <args…>` with the settings' variables.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut cmd = Command::new("docker");
        cmd.arg("compose")
            .arg("--file")
            .arg(&self.file)
            .arg("--project-name")
            .arg(&self.project)
            .args(args.into_iter().map(Into::into))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Checks that the `docker` CLI and its compose v2 plugin are there.
    pub fn check_available() -> Result<(), DockerError> {
        let output = Command::new("docker")
            .args(["compose", "version", "--short"])
            .stdin(Stdio::null())
            .output();
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DockerError::NotInstalled {
                host: super::docker::docker_host(),
            }),
            Err(e) => Err(DockerError::ComposeMissing {
                detail: e.to_string(),
            }),
            Ok(out) if !out.status.success() => Err(DockerError::ComposeMissing {
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
            Ok(_) => Ok(()),
        }
    }

    fn run(&self, args: &[&str]) -> Result<ExitStatus, DockerError> {
        self.command(args)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| DockerError::ComposeMissing {
                detail: e.to_string(),
            })
    }

    /// `up -d` (idempotent; with `wait`, also `--wait` for containers to be running/healthy),
    /// with compose's stderr (its progress and errors) passed through to
    /// ours and also returned, so `up` can name the cause of a failure in its summary.
    pub fn up_teed(&self, wait: Option<u64>) -> Result<(ExitStatus, String), DockerError> {
        use std::io::{BufRead, Write};
        let mut args = vec![
            "up".to_string(),
            "--detach".into(),
            "--remove-orphans".into(),
        ];
        if let Some(secs) = wait {
            args.extend(["--wait".into(), "--wait-timeout".into(), secs.to_string()]);
        }
        let missing = |e: std::io::Error| DockerError::ComposeMissing {
            detail: e.to_string(),
        };
        let mut child = self
            .command(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(missing)?;
        let mut seen = String::new();
        if let Some(err) = child.stderr.take() {
            let mut ours = std::io::stderr();
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(ours, "{line}");
                seen.push_str(&line);
                seen.push('\n');
            }
        }
        let status = child.wait().map_err(missing)?;
        Ok((status, seen))
    }

    /// `down`; with `volumes`, also removes the named volumes (all stored telemetry).
    pub fn down(&self, volumes: bool) -> Result<ExitStatus, DockerError> {
        if volumes {
            self.run(&["down", "--volumes", "--remove-orphans"])
        } else {
            self.run(&["down", "--remove-orphans"])
        }
    }

    /// Starts `up -d` in the background and returns at once; its output goes to `log` and,
    /// when it ends, its exit status to `exit_file` (written by a `sh` wrapper, since the
    /// launcher is usually gone by then).
    ///
    /// The child gets its own process group so a Ctrl-C meant for claude does not stop it,
    /// and a thread reaps it so it never lingers as a zombie.
    pub fn spawn_up_detached(&self, log: &Path, exit_file: &Path) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let compose = self.command(["up", "--detach", "--remove-orphans"]);
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            .arg("\"$@\"; code=$?; echo \"$code\" > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"")
            .arg(exit_file)
            .arg(compose.get_program())
            .args(compose.get_args())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = wrapper
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()?;
        std::thread::Builder::new()
            .name("stack-up-reaper".to_string())
            .spawn(move || {
                let _ = child.wait();
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_overrides_only_when_set() {
        let mut s = StackSettings::default();
        let env = compose_env(&s);
        assert!(!env.iter().any(|(k, _)| k.ends_with("_IMAGE")));
        s.images.loki = Some("local/loki:test".into());
        s.ports.grafana = 3300;
        let env = compose_env(&s);
        assert!(env.contains(&(
            "CLAUDE_TELEMETRY_LOKI_IMAGE".into(),
            "local/loki:test".into()
        )));
        assert!(env.contains(&("CLAUDE_TELEMETRY_GRAFANA_PORT".into(), "3300".into())));
    }

    #[test]
    fn every_variable_set_is_read_by_the_compose_file() {
        let compose =
            std::str::from_utf8(super::super::files::embedded(COMPOSE_FILE).expect("embedded"))
                .expect("utf8");
        let mut s = StackSettings::default();
        s.images.collector = Some("a".into());
        s.images.prometheus = Some("b".into());
        s.images.loki = Some("c".into());
        s.images.grafana = Some("d".into());
        for (k, _) in compose_env(&s) {
            assert!(
                compose.contains(&format!("${{{k}:-")),
                "{k} not used by the compose file"
            );
        }
    }
}
