//! Live reload: SIGHUP or a changed watched file (config, allowed_emails_file, templates, TLS
//! certificate) re-reads it without dropping connections; an invalid config keeps the old one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::server::{systemd, tls};
use crate::state::AppState;

const POLL: Duration = Duration::from_secs(2);

fn mtimes(files: &[PathBuf]) -> HashMap<PathBuf, Option<SystemTime>> {
    files
        .iter()
        .map(|f| (f.clone(), crate::config::mtime(f)))
        .collect()
}

/// The times the running config was read with (falls back to now for configs not from a file).
fn loaded(cfg: &Config) -> HashMap<PathBuf, Option<SystemTime>> {
    if cfg.loaded_mtimes.is_empty() {
        mtimes(&cfg.watched_files)
    } else {
        cfg.loaded_mtimes.iter().cloned().collect()
    }
}

fn tls_files(cfg: &Config) -> Vec<PathBuf> {
    cfg.tls
        .iter()
        .flat_map(|t| [t.cert.clone(), t.key.clone()])
        .collect()
}

/// Re-reads the configuration file. On success swaps it in; on failure keeps the old one.
pub fn reload_config(state: &AppState) -> Result<(), String> {
    let old = state.config();
    let new = Config::load(&old.source).map_err(|e| e.to_string())?;
    // All or nothing: the certificate of the new configuration is loaded before anything is
    // swapped, so a broken one leaves routes, access and TLS exactly as they were.
    let tls = match &new.tls {
        Some(t) => Some(tls::server_config(&t.cert, &t.key).map_err(|e| format!("tls: {e}"))?),
        None => None,
    };
    for (what, changed) in [
        ("listen", new.listen != old.listen),
        (
            "tls.listen",
            new.tls.as_ref().map(|t| t.listen) != old.tls.as_ref().map(|t| t.listen),
        ),
        ("data_dir", new.data_dir != old.data_dir),
        ("metrics_listen", new.metrics_listen != old.metrics_listen),
    ] {
        if changed {
            tracing::warn!(key = what, "changed, but takes effect only after a restart");
        }
    }
    state.set_config(new)?;
    if let Some(c) = tls {
        state.tls.store(Some(c));
    }
    Ok(())
}

/// Re-reads the TLS certificate and key; keeps the old ones if the new files are broken.
pub fn reload_tls(state: &AppState) -> Result<(), String> {
    let cfg = state.config();
    if let Some(t) = &cfg.tls {
        let c = tls::server_config(&t.cert, &t.key).map_err(|e| e.to_string())?;
        state.tls.store(Some(c));
    }
    Ok(())
}

/// Reloads and says whether the new configuration took over.
fn apply(state: &AppState, why: &str) -> bool {
    systemd::notify("RELOADING=1");
    let ok = match reload_config(state) {
        Ok(()) => {
            tracing::info!(
                trigger = why,
                routes = state.config().routes.len(),
                "configuration reloaded"
            );
            true
        }
        Err(e) => {
            tracing::error!(trigger = why, problems = %e.trim_end(), "reload refused; keeping the running configuration");
            false
        }
    };
    systemd::notify("READY=1");
    ok
}

/// Watches for SIGHUP and file changes until `stop`.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
            None
        }
    };
    let mut seen = loaded(&state.config());
    let mut seen_tls = mtimes(&tls_files(&state.config()));
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                if apply(&state, "SIGHUP") {
                    seen = loaded(&state.config());
                }
            }
            _ = tokio::time::sleep(POLL) => {
                let cfg = state.config();
                let now = mtimes(&cfg.watched_files);
                if now != seen {
                    // A refused edit is not retried until the files change again.
                    seen = if apply(&state, "file changed") { loaded(&state.config()) } else { now };
                }
                let now_tls = mtimes(&tls_files(&cfg));
                if now_tls != seen_tls {
                    match reload_tls(&state) {
                        Ok(()) => tracing::info!("TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one"),
                    }
                }
            }
            _ = stop.changed() => return,
        }
        seen_tls = mtimes(&tls_files(&state.config()));
    }
}
