//! The real `portcullis` binary as a child process: a config file in a temp dir, stderr captured
//! to a log file, signals, and the control-socket CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use super::{free_port, set_path, Http, Req, Smtp, WAIT};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A configuration for the binary: `listen`/`public_url` on `port`, data in `{dir}/data`, mail to
/// `smtp_port`, the `example.com` domain allowed, built-in whoami upstream, rate limits out of the way.
pub fn base_config(dir: &Path, port: u16, smtp_port: u16) -> Value {
    json!({
        "listen": format!("127.0.0.1:{port}"),
        "public_url": format!("http://127.0.0.1:{port}"),
        "data_dir": dir.join("data").display().to_string(),
        "upstream": "builtin:whoami",
        "access": {"allowed_domains": ["example.com"]},
        "login": {
            "resend_cooldown": "0s",
            "rate_limit": {"per_ip_per_minute": 1000, "per_email_per_hour": 1000, "per_email_burst": 1000},
        },
        "email": {
            "from": "Portcullis <auth@example.com>",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": "5s"},
        },
        "limits": {"shutdown_grace": "2s"},
    })
}

/// Writes `cfg` as YAML.
pub fn write_yaml(path: &Path, cfg: &Value) {
    std::fs::write(path, serde_yaml::to_string(cfg).unwrap()).unwrap();
}

/// Sets a dotted key of a config value (chainable helper around [`set_path`]).
pub fn with(mut cfg: Value, path: &str, value: Value) -> Value {
    set_path(&mut cfg, path, value);
    cfg
}

/// A running `portcullis serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    pub log: PathBuf,
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's binary setup: a temp dir, an SMTP server and a free port.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub smtp: Smtp,
    pub port: u16,
    pub config: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.yaml");
        Setup {
            smtp: Smtp::start(),
            port: free_port(),
            config,
            dir,
        }
    }

    /// [`base_config`] for this setup.
    pub fn base(&self) -> Value {
        base_config(self.dir.path(), self.port, self.smtp.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes `cfg` to the config file and starts `portcullis serve` on it.
    pub async fn serve(&self, cfg: &Value, envs: &[(&str, &str)]) -> Served {
        write_yaml(&self.config, cfg);
        Served::start(
            &self.config,
            &self.dir.path().join("serve.log"),
            self.port,
            envs,
        )
        .await
    }

    /// Signs `email` in through the JSON API; returns the session token.
    pub async fn sign_in(&self, email: &str) -> String {
        super::api_sign_in(&self.base_url(), &self.smtp, email).await
    }

    /// `portcullis sessions ARGS --config <this config>`.
    pub fn sessions_cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("sessions")
            .args(args)
            .arg("--config")
            .arg(&self.config);
        cmd.output().unwrap()
    }
}

impl Served {
    /// Starts the binary (stderr appended to `log`) and waits until `/.auth/healthz` answers.
    pub async fn start(config: &Path, log: &Path, port: u16, envs: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"]).arg(config);
        Served::launch(cmd, log, port, envs).await
    }

    /// Starts `cmd` (which runs `portcullis serve`, e.g. through a shell that sets limits first)
    /// like [`Served::start`].
    pub async fn launch(mut cmd: Command, log: &Path, port: u16, envs: &[(&str, &str)]) -> Served {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("PORTCULLIS_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut served = Served {
            child,
            log: log.to_path_buf(),
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = Http::new(&served.base);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!(
                    "portcullis serve exited at start ({status}):\n{}",
                    served.log_text()
                );
            }
            if let Ok(r) = http.try_send(Req::get("/.auth/healthz")).await {
                if r.status == StatusCode::OK {
                    return served;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "portcullis serve did not come up:\n{}",
                served.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn http(&self) -> Http {
        Http::new(&self.base)
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log never said {needle:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self
            .wait_exit(WAIT)
            .expect("portcullis serve did not exit after SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "exit: {status}\n{}",
            self.log_text()
        );
    }
}

/// Replaces a file (atomically, by rename) but keeps its modification time, so only an explicit
/// SIGHUP (not the reloader's mtime polling) can notice the change.
pub fn rewrite_keeping_mtime(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let tmp = path.with_extension("next");
    std::fs::write(&tmp, text).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    f.set_modified(before).unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), before);
}
