//! Real Redis for multi-replica tests: Debian's `redis-server` on a loopback port (append-only
//! file, fsync always, so a restart on the same folder keeps every write), a Sentinel set-up
//! (primary, one replica, `redis-sentinel` processes) that can lose its primary, and a real nginx
//! round-robin load balancer in front of several gateways. A test whose server is not installed is
//! skipped with a `SKIPPED` line on stderr, unless `PORTCULLIS_REQUIRE_SYSTEM_SERVERS=1` (CI) makes
//! that a failure. Redis is spoken to over a raw socket (RESP), so nothing here depends on the
//! gateway's own client.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, WAIT};

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Ports [`quiet_port`] handed out in this process.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A free loopback port below the kernel's ephemeral range, never handed out twice in this
/// process. [`free_port`] picks from the ephemeral range, where the suite's thousands of outgoing
/// connections take source ports: one of them can grab a port between the moment it is picked
/// and the moment a server (started later, or restarted on the same port) binds it. Below the
/// range only listeners bind. Falls back to [`free_port`] when the range starts too low.
pub fn quiet_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    if low < 12_000 {
        return free_port();
    }
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = rand::random::<u16>() % (low - 10_000) + 10_000;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// The installed binary, or the calling test is skipped ([`super::skip`]).
fn binary(name: &str, usual: &[&str]) -> Option<PathBuf> {
    super::system_binary(name, usual, "redis-server redis-sentinel nginx")
}

fn redis_server_bin() -> Option<PathBuf> {
    binary("redis-server", &["/usr/bin/redis-server"])
}

fn redis_sentinel_bin() -> Option<PathBuf> {
    binary("redis-sentinel", &["/usr/bin/redis-sentinel"])
}

// ---------------------------------------------------------------------------------------------
// RESP over a raw socket
// ---------------------------------------------------------------------------------------------

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A simple or bulk string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub fn items(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn read_reply(r: &mut impl std::io::BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let num = || rest.parse::<i64>().map_err(|_| bad(line));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; usize::try_from(n).map_err(|_| bad(line))? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad(line)),
    })
}

/// Sends one command to the server on `127.0.0.1:{port}` (a new connection, 2 s timeouts).
pub fn command(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out)?;
    read_reply(&mut BufReader::new(s))
}

/// True when `127.0.0.1:{port}` answers a raw inline `PING` with `+PONG`.
pub fn pings(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.trim_end() == "+PONG"
}

/// `INFO {section}` as key/value pairs.
pub fn info(port: u16, section: &str) -> Vec<(String, String)> {
    command(port, &["INFO", section])
        .ok()
        .and_then(|r| r.text())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn info_field(port: u16, section: &str, key: &str) -> Option<String> {
    info(port, section)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A `redis-server` on `127.0.0.1:{port}` with its data in a temp dir; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process would not die of SIGKILL before SIGCONT on every kernel.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}

impl RedisServer {
    /// A fresh server on a free port. `None` (the test is skipped) when redis-server is missing.
    pub fn start() -> Option<RedisServer> {
        let bin = redis_server_bin()?;
        Some(Self::spawn_new(bin, &[]))
    }

    fn spawn_new(bin: PathBuf, extra: &[String]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = quiet_port();
        let d = dir.path().display().to_string();
        let log = dir.path().join("redis.log");
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &d,
            "--logfile",
            &log.display().to_string(),
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut s = RedisServer {
            port,
            bin,
            args,
            child: None,
            log,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server answers `PING` (not `-LOADING`).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!(
                        "redis-server on {} exited at start ({status}):\n{}",
                        self.port,
                        self.log_text()
                    );
                }
            }
            if pings(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {}:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's folder (append-only file, log).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `redis://127.0.0.1:{port}/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL; waits for the process to be gone. No-op when already dead.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGSTOP: the server keeps its port (connections are even accepted by the kernel) but
    /// answers nothing, like a hung host.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("redis-server is not running")
            .id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid} failed");
    }

    /// Starts the server again on the same port and folder (after [`RedisServer::kill`]; kills
    /// it first otherwise) and waits until it has loaded its data and answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command.
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<Reply> {
        command(self.port, args)
    }

    /// The server's log (its tail).
    pub fn log_text(&self) -> String {
        tail(&self.log)
    }

    /// Keys matching `pattern` (`SCAN`, so fine on a live server).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let r = self
                .cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .unwrap();
            let items = r.items();
            cursor = items[0].text().unwrap();
            out.extend(items[1].items().iter().filter_map(Reply::text));
            if cursor == "0" {
                return out;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-sentinel` process.
pub struct SentinelProc {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary, one replica and `n` sentinels (quorum 1, down after 1 s, failover timeout 3 s).
pub struct SentinelSet {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<SentinelProc>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts everything and waits until every sentinel knows the primary, the replica and the
    /// other sentinels. `None` (the test is skipped) when redis-server or redis-sentinel is missing.
    pub fn start(n: usize) -> Option<SentinelSet> {
        let server = redis_server_bin()?;
        let sentinel = redis_sentinel_bin()?;
        let primary = RedisServer::spawn_new(server.clone(), &[]);
        let replica = RedisServer::spawn_new(
            server,
            &[
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                primary.port.to_string(),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let mut sentinels = Vec::new();
        for i in 0..n {
            let port = quiet_port();
            let d = dir.path().display();
            let log = dir.path().join(format!("sentinel-{i}.log"));
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"{}\"\ndir \"{d}\"\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n",
                log.display(),
                primary.port
            );
            std::fs::write(&conf, text).unwrap();
            let child = Command::new(&sentinel)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            sentinels.push(SentinelProc { port, child, log });
        }
        let mut set = SentinelSet {
            primary,
            replica,
            sentinels,
            _dir: dir,
        };
        set.wait_ready();
        Some(set)
    }

    /// `["127.0.0.1:P", ...]` of every sentinel.
    pub fn addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The primary's port as sentinel `i` reports it (`SENTINEL get-master-addr-by-name`).
    pub fn reported_primary(&self, i: usize) -> Option<u16> {
        let r = command(
            self.sentinels[i].port,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        )
        .ok()?;
        r.items().get(1)?.text()?.parse().ok()
    }

    fn count(&self, i: usize, what: &str) -> usize {
        command(self.sentinels[i].port, &["SENTINEL", what, MASTER_NAME])
            .map(|r| r.items().len())
            .unwrap_or(0)
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- primary {} ---\n{}\n--- replica {} ---\n{}\n",
            self.primary.port,
            self.primary.log_text(),
            self.replica.port,
            self.replica.log_text()
        );
        for s in &self.sentinels {
            out.push_str(&format!("--- sentinel {} ---\n{}\n", s.port, tail(&s.log)));
        }
        out
    }

    fn wait_ready(&mut self) {
        let n = self.sentinels.len();
        let deadline = Instant::now() + WAIT;
        loop {
            for s in &mut self.sentinels {
                if let Some(status) = s.child.try_wait().unwrap() {
                    panic!(
                        "redis-sentinel on {} exited at start ({status}):\n{}",
                        s.port,
                        tail(&s.log)
                    );
                }
            }
            let linked = info_field(self.replica.port, "replication", "master_link_status")
                .as_deref()
                == Some("up");
            let ready = linked
                && (0..n).all(|i| {
                    self.reported_primary(i) == Some(self.primary.port)
                        && self.count(i, "replicas") == 1
                        && self.count(i, "sentinels") == n - 1
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not discover the primary, the replica and each other:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the replica has received everything the primary has written so far.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let primary = info_field(self.primary.port, "replication", "master_repl_offset");
            let replica = info_field(self.replica.port, "replication", "slave_repl_offset");
            if primary.is_some() && primary == replica {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not catch up: primary {primary:?}, replica {replica:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the primary.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Waits until every sentinel reports the replica as the primary and the replica says it is
    /// one; returns how long that took.
    pub fn wait_promoted(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let role = command(self.replica.port, &["ROLE"])
                .ok()
                .and_then(|r| r.items().first().and_then(Reply::text));
            let promoted = role.as_deref() == Some("master")
                && (0..self.sentinels.len())
                    .all(|i| self.reported_primary(i) == Some(self.replica.port));
            if promoted {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "no failover to the replica within {timeout:?} (role {role:?}):\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nginx as a round-robin load balancer
// ---------------------------------------------------------------------------------------------

/// nginx on `127.0.0.1:{port}` balancing round-robin over several gateways; killed when dropped.
pub struct Balancer {
    /// `http://127.0.0.1:{port}`
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
    pub config_text: String,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the balancer's access log.
#[derive(Debug, Clone)]
pub struct Hop {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// The gateway's port that answered (the last one tried, if nginx tried several).
    pub upstream: Option<u16>,
}

impl Balancer {
    /// Starts nginx (one process, no master) on `port` with `upstream { server 127.0.0.1:B; … }`
    /// and `proxy_pass`, passing `Host` (with its port), `X-Forwarded-For` and `-Proto`. `None`
    /// when nginx is not installed (the test is skipped).
    pub async fn start(port: u16, backends: &[u16]) -> Option<Balancer> {
        let bin = binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let servers: String = backends
            .iter()
            .map(|b| format!("        server 127.0.0.1:{b};\n"))
            .collect();
        // `$http_host`, not `$host`: the gateways' public_url carries the balancer's port.
        let conf = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   log_format lb '$request_method $request_uri $status $upstream_addr';\n\
             \x20   access_log {d}/access.log lb;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   upstream portcullis {{\n{servers}    }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://portcullis;\n\
             \x20           proxy_set_header Host $http_host;\n\
             \x20           proxy_set_header X-Forwarded-For $remote_addr;\n\
             \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, &conf).unwrap();
        let out = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(format!("{d}/"))
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut b = Balancer {
            base: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            config_text: conf,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!(
                    "nginx exited at start ({status}):\n{}\nconfiguration:\n{}",
                    b.error_log(),
                    b.config_text
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(b);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not start listening on {port}:\n{}",
                b.error_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        tail(&self.dir.path().join("error.log"))
    }

    /// The first `n` requests the balancer passed on, in order. nginx logs a request after it
    /// has answered it, so this waits (at most 5 s) until `n` lines are there.
    pub async fn hops(&self, n: usize) -> Vec<Hop> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut hops = self.logged();
            if hops.len() >= n {
                hops.truncate(n);
                return hops;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx logged {} requests, expected {n}: {hops:?}",
                hops.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request the balancer logged so far, in order.
    pub fn logged(&self) -> Vec<Hop> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, ' ');
                let method = f.next()?.to_string();
                let uri = f.next()?.to_string();
                let status = f.next()?.parse().ok()?;
                let upstream = f
                    .next()
                    .and_then(|u| u.rsplit(", ").next())
                    .and_then(|u| u.rsplit(':').next())
                    .and_then(|p| p.parse().ok());
                Some(Hop {
                    method,
                    uri,
                    status,
                    upstream,
                })
            })
            .collect()
    }
}
