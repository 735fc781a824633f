//! The `portcullis` command line: `serve` runs the gateway, `check` validates a configuration file,
//! `sessions` talks to the running server; `completions` and `man` print shell completions and a
//! man page generated from the same definition.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use portcullis::config::LogFormat;
use portcullis::logsink::{LogGuard, LogSink};
use portcullis::{App, Config, SystemClock};

/// Prints to stdout, ignoring a closed pipe (`portcullis check | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `--help` and the man page's DESCRIPTION.
const LONG_ABOUT: &str = "Passwordless authentication gateway: magic link + one-time code sign-in in front of any web app.

A request without a session gets a sign-in page; the user receives one mail with a link and a code, either signs them in, and signed-in requests are forwarded to the app with the user's address in headers. nginx, Caddy and Traefik can ask it instead (forward-auth).

The configuration is one YAML file (`portcullis check --config FILE` validates it); the database and the master secret live in its data_dir. SIGHUP reloads the configuration; SIGTERM finishes in-flight requests and exits. Logs go to stderr (PORTCULLIS_LOG=debug for more).";

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Passwordless authentication gateway: magic link + one-time code sign-in in front of any web app",
    long_about = LONG_ABOUT
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
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) to stdout.
    #[command(
        after_help = "bash: portcullis completions bash > /etc/bash_completion.d/portcullis\nzsh:  portcullis completions zsh > \"${fpath[1]}/_portcullis\"\nfish: portcullis completions fish > ~/.config/fish/completions/portcullis.fish"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line: `portcullis man | man -l -`.
    Man,
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
        /// Configuration file (YAML) of the running server.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this user's sessions.
        #[arg(long)]
        email: Option<String>,
    },
    /// Sign a user out everywhere.
    Revoke {
        /// Configuration file (YAML) of the running server.
        #[arg(long, short)]
        config: PathBuf,
        /// The user whose sessions end.
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
    let t = |v: &serde_json::Value| portcullis::clock::format_unix(v.as_u64().unwrap_or(0));
    let mut rows: Vec<[String; 6]> = vec![[
        "ID".into(),
        "EMAIL".into(),
        "IP".into(),
        "CREATED".into(),
        "LAST SEEN".into(),
        "DEVICE".into(),
    ]];
    for s in &sessions {
        rows.push([
            s["id"].as_str().unwrap_or("").to_string(),
            s["email"].as_str().unwrap_or("").to_string(),
            s["ip"].as_str().unwrap_or("").to_string(),
            t(&s["created_at"]),
            t(&s["last_seen"]),
            portcullis::auth::account::device(s["user_agent"].as_str().unwrap_or("")),
        ]);
    }
    // Columns as wide as their widest cell, so long addresses and timestamps stay aligned.
    let mut width = [0usize; 6];
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        out!("{}", line.trim_end());
    }
    out!("{} session(s)", sessions.len());
    ExitCode::SUCCESS
}

/// The command line as users see it: hidden commands (`bench-seed`) are left out, which
/// clap_complete would otherwise offer.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = clap::Command::new("portcullis")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    cmd
}

/// One man page for everything: NAME, SYNOPSIS, DESCRIPTION and OPTIONS of `portcullis`, then a
/// COMMANDS section with each command's synopsis, description and options (clap_mangen's own
/// renderers, their section headings dropped), so no `portcullis-serve(1)` pages are needed.
fn man_page() -> std::io::Result<Vec<u8>> {
    use clap_mangen::Man;
    let mut root = public_command().disable_help_subcommand(true);
    root.build();
    let man = Man::new(root.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?; // the only chunk that keeps roff's preamble
    let sections: [Render; 4] = [
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for render in sections {
        out.extend(roff_chunk(&man, render, true)?);
    }
    out.extend_from_slice(b".SH COMMANDS\n");
    for cmd in root.get_subcommands() {
        man_command(cmd, &mut out)?;
    }
    out.extend(roff_chunk(&man, Man::render_version_section, true)?);
    Ok(out)
}

type Render = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;

/// A `.SS "portcullis <command>"` subsection per leaf command (`sessions list`, not `sessions`).
fn man_command(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    use clap_mangen::Man;
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands() {
            man_command(sub, out)?;
        }
        return Ok(());
    }
    // Bin names are plain words here (`portcullis sessions list`): no roff escaping needed.
    let title = cmd.get_bin_name().unwrap_or(cmd.get_name());
    out.extend_from_slice(format!(".SS \"{title}\"\n").as_bytes());
    let man = Man::new(cmd.clone());
    let sections: [Render; 3] = [
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for render in sections {
        out.extend(roff_chunk(&man, render, false)?);
        out.extend_from_slice(b".PP\n");
    }
    Ok(())
}

/// One clap_mangen section without the preamble every render repeats, and without its `.SH`
/// heading unless `heading`.
fn roff_chunk(man: &clap_mangen::Man, render: Render, heading: bool) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    render(man, &mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let mut out = Vec::with_capacity(raw.len());
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g ") || line.starts_with(".el .ds Aq ");
        if preamble || (!heading && line.starts_with(".SH ")) {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// Writes generated output to stdout; a closed pipe (`portcullis man | head`) is not an error.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr in batches written by a background thread ([`LogSink`]), so a busy gateway
/// never waits on the terminal or journald and pays no system call per line. Keep the guard
/// alive: dropping it writes out what is left.
fn init_logging(format: LogFormat) -> Option<LogGuard> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Not lossy: under extreme load logging slows requests rather than dropping audit lines.
    let (writer, guard) = match LogSink::new(Box::new(std::io::stderr())) {
        Ok((sink, guard)) => {
            portcullis::logsink::install(sink.clone(), format == LogFormat::Json);
            (BoxMakeWriter::new(sink), Some(guard))
        }
        Err(e) => {
            eprintln!("portcullis: no log writer thread ({e}); logging straight to stderr");
            (BoxMakeWriter::new(std::io::stderr), None)
        }
    };
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
                    "  store         {}",
                    portcullis::state::describe_store(&cfg)
                );
                if let portcullis::store::StoreConfig::Redis(_) = cfg.store {
                    if cfg.secrets_file.is_none() {
                        out!("  note          no secrets_file: the master secret is created in the store, so whoever can read Redis can also sign JWT assertions and test codes offline; give every replica the same secrets_file instead");
                    }
                }
                out!(
                    "  sign-in       {} (ttl {}), mail via {}",
                    cfg.login.methods_in_words(),
                    humantime::format_duration(cfg.login.ttl),
                    match cfg.email.transport {
                        portcullis::config::MailTransport::Smtp(ref s) =>
                            format!("smtp {}:{}", s.host, s.port),
                        portcullis::config::MailTransport::Log => "log".into(),
                        portcullis::config::MailTransport::File(ref d) =>
                            format!("file {}", d.display()),
                    }
                );
                out!("  pages         {}", cfg.branding.describe());
                if let Some(h) = &cfg.login.hint {
                    out!("  hint          \"{h}\" (on the sign-in and check-email pages)");
                }
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
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut public_command(), "portcullis", &mut script);
            print_bytes(&script)
        }
        Command::Man => match man_page() {
            Ok(page) => print_bytes(&page),
            Err(e) => {
                eprintln!("portcullis man: {e}");
                ExitCode::from(1)
            }
        },
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = rt.block_on(Store::connect(
        &cfg.store,
        &StoreOptions {
            cache_bytes: cfg.limits.db_cache_bytes,
            ..StoreOptions::new(&cfg.data_dir)
        },
    ))?;
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
        rt.block_on(store.insert_session(&hash, &session))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap's own checks (duplicate flags, bad defaults), which `completions` and `man` rely on.
        Cli::command().debug_assert();
    }
}
