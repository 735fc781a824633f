//! Real nginx and Caddy in front of the gateway, configured with the forward-auth snippets shipped
//! in `docs/forward-auth/` (only the listen ports and upstream addresses are substituted). A test
//! whose proxy is not installed is skipped with a `SKIPPED` line on stderr, unless
//! `PORTCULLIS_REQUIRE_SYSTEM_SERVERS=1` (CI) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::WAIT;

/// A reverse proxy process listening on `127.0.0.1:{port}`; killed when dropped.
pub struct Proxy {
    pub name: &'static str,
    pub port: u16,
    /// `http://127.0.0.1:{port}`
    pub base: String,
    child: Child,
    log: PathBuf,
    /// The configuration the proxy runs with (for failure messages).
    pub config_text: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The installed binary, or the calling test is skipped ([`super::skip`]).
fn binary(name: &str, usual: &[&str]) -> Option<PathBuf> {
    super::system_binary(name, usual, "nginx caddy")
}

fn snippet(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/forward-auth")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Replaces every `from` by `to`, failing if the snippet no longer contains `from`.
fn substitute(text: &str, file: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "docs/forward-auth/{file} no longer contains `{from}`; update the test's substitutions"
    );
    text.replace(from, to)
}

/// Waits until the proxy accepts connections (or exits, or WAIT passes).
async fn wait_listening(p: &mut Proxy) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "{} exited at start ({status}):\n{}\nconfiguration:\n{}",
                p.name,
                p.log_text(),
                p.config_text
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", p.port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not start listening on {}:\n{}",
            p.name,
            p.port,
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The host the snippets serve: clients must send `Host: app.example.com` (both proxies pick the
/// site by name, and nginx refuses every other name with 421).
pub const APP_HOST: &str = "app.example.com";

/// nginx on `port` with `docs/forward-auth/nginx.conf` as its only server blocks: Portcullis on
/// `gateway`, the app on `app`. `None` when nginx is not installed (the test is skipped).
pub async fn nginx(port: u16, gateway: u16, app: u16) -> Option<Proxy> {
    nginx_with(port, gateway, app, "").await
}

/// The same snippet beside another site on the same nginx: `status.example.com`, proxied to
/// `public_app` without any auth. It comes first, so it would be nginx's default server were it
/// not for the snippet's own `default_server`.
pub async fn nginx_beside_public_site(
    port: u16,
    gateway: u16,
    app: u16,
    public_app: u16,
) -> Option<Proxy> {
    let other = format!(
        "server {{\n    listen 127.0.0.1:{port};\n    server_name status.example.com;\n    location / {{\n        proxy_pass http://127.0.0.1:{public_app};\n    }}\n}}\n\n"
    );
    nginx_with(port, gateway, app, &other).await
}

async fn nginx_with(port: u16, gateway: u16, app: u16, other_sites: &str) -> Option<Proxy> {
    let bin = binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let f = "nginx.conf";
    let mut site = snippet(f);
    site = substitute(&site, f, "127.0.0.1:8080", &format!("127.0.0.1:{gateway}"));
    site = substitute(&site, f, "127.0.0.1:3000", &format!("127.0.0.1:{app}"));
    site = substitute(
        &site,
        f,
        "listen 80 default_server;",
        &format!("listen 127.0.0.1:{port} default_server;"),
    );
    site = substitute(&site, f, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    // The server name stays as shipped: the test clients send `Host: app.example.com`.
    assert!(
        site.contains(&format!("server_name {APP_HOST};")),
        "docs/forward-auth/{f} no longer serves {APP_HOST}; update the tests"
    );
    let site = format!("{other_sites}{site}");
    std::fs::write(dir.path().join("site.conf"), &site).unwrap();
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 512; }}\nhttp {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    include {d}/site.conf;\n}}\n"
    );
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, &main).unwrap();
    let log = dir.path().join("error.log");
    let out = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    // One process (no master/worker pair), so killing it on drop leaves nothing behind.
    let child = Command::new(bin)
        .arg("-p")
        .arg(format!("{d}/"))
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .args(["-g", "daemon off; master_process off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut p = Proxy {
        name: "nginx",
        port,
        base: format!("http://127.0.0.1:{port}"),
        child,
        log,
        config_text: format!("{main}\n--- site.conf ---\n{site}"),
        _dir: dir,
    };
    wait_listening(&mut p).await;
    Some(p)
}

/// Caddy on `port` with `docs/forward-auth/Caddyfile`: Portcullis on `gateway`, the app on `app`.
/// The site keeps its name (`http://app.example.com:{port}`; Caddy matches the Host without its
/// port, so `Host: app.example.com` reaches it). `None` when Caddy is not installed.
pub async fn caddy(port: u16, gateway: u16, app: u16) -> Option<Proxy> {
    let bin = binary("caddy", &["/usr/bin/caddy", "/usr/local/bin/caddy"])?;
    let dir = tempfile::tempdir().unwrap();
    let f = "Caddyfile";
    let mut site = snippet(f);
    site = substitute(&site, f, "127.0.0.1:8080", &format!("127.0.0.1:{gateway}"));
    site = substitute(&site, f, "127.0.0.1:3000", &format!("127.0.0.1:{app}"));
    site = substitute(
        &site,
        f,
        "http://app.example.com {",
        &format!("http://app.example.com:{port} {{"),
    );
    let text = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    let conf = dir.path().join("Caddyfile");
    std::fs::write(&conf, &text).unwrap();
    let log = dir.path().join("caddy.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .args(["--adapter", "caddyfile"])
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let mut p = Proxy {
        name: "caddy",
        port,
        base: format!("http://127.0.0.1:{port}"),
        child,
        log,
        config_text: text,
        _dir: dir,
    };
    wait_listening(&mut p).await;
    Some(p)
}
