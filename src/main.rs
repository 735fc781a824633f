//! The `portcullis` command line: `serve` runs the gateway, `check` validates a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use portcullis::config::LogFormat;
use portcullis::{App, Config, SystemClock};

/// Prints to stdout, ignoring a closed pipe (`portcullis check | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Passwordless authentication gateway: magic link + one-time code sign-in in front of any web app"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    Check {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List or revoke sessions of the running server (through its control socket in data_dir).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Benchmarks only: write COUNT sessions into the (stopped) gateway's store and print one valid token.
    #[command(hide = true)]
    BenchSeed {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value = "bench@example.com")]
        email: String,
        /// Print the tokens of this many sessions (one per line), spread over the whole set.
        #[arg(long, default_value_t = 1)]
        print_tokens: u64,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// List sessions (all, or one user's).
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        email: Option<String>,
    },
    /// Sign a user out everywhere.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        email: String,
    },
}

fn sessions_cmd(action: SessionsAction) -> ExitCode {
    use portcullis::server::control::{call, Command};
    let (config, cmd) = match action {
        SessionsAction::List { config, email } => (
            config,
            Command {
                cmd: "list".into(),
                email,
            },
        ),
        SessionsAction::Revoke { config, email } => (
            config,
            Command {
                cmd: "revoke".into(),
                email: Some(email),
            },
        ),
    };
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let reply = match rt.block_on(call(&cfg.data_dir, &cmd)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis sessions: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(err) = reply.get("error").and_then(|e| e.as_str()) {
        eprintln!("portcullis sessions: {err}");
        return ExitCode::from(1);
    }
    if let Some(n) = reply.get("revoked") {
        out!(
            "revoked {n} session(s) of {}",
            reply["email"].as_str().unwrap_or("")
        );
        return ExitCode::SUCCESS;
    }
    let sessions = reply["sessions"].as_array().cloned().unwrap_or_default();
    out!(
        "{:<14} {:<32} {:<16} {:<20} {:<20} DEVICE",
        "ID",
        "EMAIL",
        "IP",
        "CREATED",
        "LAST SEEN"
    );
    let t = |v: &serde_json::Value| portcullis::clock::format_unix(v.as_u64().unwrap_or(0));
    for s in &sessions {
        out!(
            "{:<14} {:<32} {:<16} {:<20} {:<20} {}",
            s["id"].as_str().unwrap_or(""),
            s["email"].as_str().unwrap_or(""),
            s["ip"].as_str().unwrap_or(""),
            t(&s["created_at"]),
            t(&s["last_seen"]),
            portcullis::auth::account::device(s["user_agent"].as_str().unwrap_or("")),
        );
    }
    out!("{} session(s)", sessions.len());
    ExitCode::SUCCESS
}

/// Logs go to stderr through a background writer, so a busy gateway never waits on the terminal
/// or journald. Keep the guard alive: dropping it flushes what is left.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Not lossy: under extreme load logging slows requests rather than dropping audit lines.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    guard
}

/// The host of an `http://` public_url that is not loopback (`localhost`, `*.localhost`,
/// 127.0.0.0/8, `::1`): there cookies and mailed links cross a network unencrypted.
fn plain_http_host(public_url: &url::Url) -> Option<String> {
    if public_url.scheme() != "http" {
        return None;
    }
    let loopback = match public_url.host()? {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (!loopback).then(|| public_url.host_str().unwrap_or_default().to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything this process creates (database files sled makes lazily, the secret, the
    // control socket, .eml files) is private to its user from birth, whatever umask it got.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                out!("config OK: {}", config.display());
                out!(
                    "  listen        {}{}",
                    cfg.listen,
                    cfg.tls
                        .as_ref()
                        .map(|t| format!(" + TLS on {}", t.listen))
                        .unwrap_or_default()
                );
                out!("  public_url    {}", cfg.public_url);
                if let Some(host) = plain_http_host(&cfg.public_url) {
                    out!("  warning       public_url is plain http on `{host}`, which is not this machine: session cookies, sign-in links and codes travel in clear over the network (anyone on the path can take over a session); use https (tls: or a TLS proxy in front) unless the network itself is trusted");
                }
                out!("  data_dir      {}", cfg.data_dir.display());
                out!(
                    "  sign-in       {} (ttl {:?}), mail via {}",
                    cfg.login.method_name(),
                    cfg.login.ttl,
                    match cfg.email.transport {
                        portcullis::config::MailTransport::Smtp(ref s) =>
                            format!("smtp {}:{}", s.host, s.port),
                        portcullis::config::MailTransport::Log => "log".into(),
                        portcullis::config::MailTransport::File(ref d) =>
                            format!("file {}", d.display()),
                    }
                );
                out!(
                    "  paths         spellings servers read differently (%2f, \\, %00, %252f) {}",
                    match cfg.ambiguous_paths {
                        portcullis::routing::AmbiguousPaths::Reject => "are refused (400)",
                        portcullis::routing::AmbiguousPaths::Forward =>
                            "are forwarded where no rule lies below their route",
                    }
                );
                for r in &cfg.routes {
                    let up = match &r.upstream {
                        portcullis::config::Upstream::Whoami => "builtin:whoami".to_string(),
                        portcullis::config::Upstream::Http { scheme, authority } => {
                            format!("{scheme}://{authority}")
                        }
                    };
                    out!("  route         {} -> {}", r.name, up);
                    let who = if r.public {
                        "anyone, no sign-in (public route)".to_string()
                    } else {
                        r.access.describe()
                    };
                    out!("    who may enter  {who}");
                    if !r.public_paths.is_empty() {
                        let paths: Vec<String> =
                            r.public_paths.iter().map(|p| p.to_string()).collect();
                        out!(
                            "    public paths   {} (exact spelling only)",
                            paths.join(", ")
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(1)
            }
        },
        Command::Sessions { action } => sessions_cmd(action),
        Command::BenchSeed {
            config,
            count,
            email,
            print_tokens,
        } => match bench_seed(&config, count, &email, print_tokens) {
            Ok(tokens) => {
                for t in tokens {
                    out!("{t}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis bench-seed: {e}");
                ExitCode::from(1)
            }
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(1);
                }
            };
            let _log_guard = init_logging(cfg.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Writes `count` sessions for `email` directly into the store; returns the token of the last one.
/// Sessions go to `local+N@domain`, so each user has one (like a real population).
fn bench_seed(
    config: &std::path::Path,
    count: u64,
    email: &str,
    print: u64,
) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    use portcullis::crypto;
    use portcullis::store::{Session, Store, StoreOptions};
    let cfg = Config::load(config)?;
    let store = Store::open(&StoreOptions {
        cache_bytes: cfg.limits.db_cache_bytes,
        ..StoreOptions::new(&cfg.data_dir)
    })?;
    let now = portcullis::Clock::now(&SystemClock);
    let (local, domain) = email.split_once('@').ok_or("--email needs an @")?;
    let every = (count / print.max(1)).max(1);
    let mut tokens = Vec::new();
    for i in 0..count {
        let token = crypto::random_token();
        let hash = crypto::sha256(token.as_bytes());
        let session = Session {
            id: portcullis::auth::session::hex_prefix(&hash),
            email: format!("{local}+{i}@{domain}"),
            created_at: now,
            expires_at: now.saturating_add(cfg.session.ttl.as_secs()),
            last_seen: now,
            ip: "127.0.0.1".into(),
            user_agent: "bench-seed".into(),
        };
        store.insert_session(&hash, &session)?;
        if i % every == every - 1 && (tokens.len() as u64) < print.max(1) {
            tokens.push(token);
        }
    }
    store.flush_blocking()?;
    Ok(tokens)
}

async fn serve(cfg: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let app = App::build(cfg, Arc::new(SystemClock)).await?;
    app.run(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
