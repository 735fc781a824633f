//! The control socket (`{data_dir}/control.sock`, mode 0600): lets `portcullis sessions list|revoke` talk to the running server, since sled allows one process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::auth::address::parse_address;
use crate::state::AppState;

/// A request line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Command {
    /// `list` or `revoke`.
    pub cmd: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// The socket path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Binds the socket (replacing a stale one) with owner-only permissions.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        // Only one server can hold the database, so an existing socket is stale.
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Answers commands until `stop`.
pub async fn serve(state: Arc<AppState>, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = stop.changed() => break,
        };
        let st = state.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(&st, stream).await {
                tracing::debug!(error = %e, "control socket client failed");
            }
        });
    }
    let _ = std::fs::remove_file(socket_path(&state.config().data_dir));
}

async fn answer(state: &AppState, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).take(4096).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(c) => run(state, c).await,
        Err(e) => serde_json::json!({"error": format!("bad command: {e}")}),
    };
    w.write_all(format!("{reply}\n").as_bytes()).await?;
    w.shutdown().await
}

async fn run(state: &AppState, c: Command) -> serde_json::Value {
    let email = match c.email.as_deref().map(parse_address) {
        Some(Ok(a)) => Some(a.canonical().to_string()),
        Some(Err(e)) => return serde_json::json!({"error": format!("--email: {e}")}),
        None => None,
    };
    match (c.cmd.as_str(), email) {
        ("list", email) => {
            let sessions: Vec<crate::store::Session> = match &email {
                Some(e) => state
                    .store
                    .sessions_for(e)
                    .await
                    .map(|v| v.into_iter().map(|(_, s)| s).collect())
                    .unwrap_or_default(),
                None => match state.store.sessions().await {
                    Ok(v) => v.into_iter().map(|(_, s)| s).collect(),
                    Err(e) => return serde_json::json!({"error": e.to_string()}),
                },
            };
            serde_json::json!({"sessions": sessions})
        }
        ("revoke", Some(email)) => match state.store.remove_sessions_for(&email).await {
            Ok(n) => {
                let _ = state.store.flush().await;
                state
                    .audit(
                        "revoke",
                        &email,
                        "control-socket",
                        &format!("{n} session(s) from the command line"),
                    )
                    .await;
                serde_json::json!({"revoked": n, "email": email})
            }
            Err(e) => serde_json::json!({"error": e.to_string()}),
        },
        ("revoke", None) => serde_json::json!({"error": "revoke needs --email"}),
        (other, _) => serde_json::json!({"error": format!("unknown command `{other}`")}),
    }
}

/// Client side: sends one command to the server for `data_dir` and returns its JSON reply.
pub async fn call(data_dir: &Path, cmd: &Command) -> Result<serde_json::Value, String> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        format!("cannot reach the running server at {} ({e}); is `portcullis serve` running with this config?", path.display())
    })?;
    let (r, mut w) = stream.into_split();
    let line = serde_json::to_string(cmd).map_err(|e| e.to_string())?;
    w.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(r)
        .read_line(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply from server: {e}"))
}
