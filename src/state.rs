//! AppState: the one shared, explicitly documented bundle of config, store, mailer, clock, client and counters.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Notify;

use crate::auth::regulation::RateLimiter;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::pages::Pages;
use crate::mail::templates::MailTemplates;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::store::{AuditEvent, Store, StoreConfig, StoreOptions};

/// The pooled upstream client (HTTP/1.1, plain or TLS).
pub type UpstreamClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector>, crate::proxy::upstream::ForwardBody>;

/// Everything a request handler needs. Shared as `Arc<AppState>`; nothing here is locked per request.
pub struct AppState {
    config: ArcSwap<Config>,
    pub store: Store,
    /// Rebuilt on reload (SMTP settings, templates).
    pub mailer: ArcSwap<Mailer>,
    pub mail_templates: ArcSwap<MailTemplates>,
    /// The HTTPS listener's rustls config; swapped when the certificate files change.
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    pub pages: Pages,
    pub clock: Arc<dyn Clock>,
    /// One pooled upstream client per connection worker, so a request and its upstream
    /// connection stay on one thread.
    pub clients: Vec<UpstreamClient>,
    /// Per connection worker, the idle connections of the gateway's own HTTP/1.1 client used
    /// for HTTP/2 clients' bodyless requests (HTTP/1 clients each keep their own).
    pub wire_pools: Vec<Arc<crate::proxy::wire::Pool>>,
    /// The master secret (from `secrets_file`, the systemd credential or `data_dir/secret`);
    /// every key below is derived from it.
    pub master: crate::crypto::MasterSecret,
    /// HMAC key for codes, derived from the master.
    pub code_key: [u8; 32],
    /// General-purpose HMAC key of this server (e.g. known-browser cookies), derived from the
    /// master (`info = "portcullis server"`); distinct from every other derived key.
    pub secret: [u8; 32],
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// Wakes the outbox worker when mail is queued.
    pub outbox_wake: Notify,
    /// JWT signing keys (always loaded; used when `headers.jwt` is set).
    pub jwt: ArcSwap<crate::jwt::Keys>,
    /// Random per-process prefix of request ids.
    pub instance_id: String,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database in `{dir}`: {err} (is another portcullis running on this data_dir?)")]
    Store {
        dir: String,
        err: crate::store::StoreError,
    },
    #[error("cannot use the store at {at}: {err}")]
    Shared {
        at: String,
        err: crate::store::StoreError,
    },
    #[error("data_dir `{dir}`: {err}")]
    DataDir { dir: String, err: std::io::Error },
    #[error("master secret: {0}")]
    Secret(String),
    #[error("email: {0}")]
    Mail(String),
    #[error("templates: {0}")]
    Templates(String),
    #[error("{0}")]
    Tls(String),
}

impl AppState {
    /// Opens the store and builds every component from a validated config.
    pub async fn new(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
        let dir = config.data_dir.display().to_string();
        // Private before anything is written into it: 0700 (a wider folder is tightened).
        crate::store::files::ensure_private_dir(&config.data_dir).map_err(|err| {
            StartError::DataDir {
                dir: dir.clone(),
                err,
            }
        })?;
        let opts = StoreOptions {
            cache_bytes: config.limits.db_cache_bytes,
            ..StoreOptions::new(&config.data_dir)
        };
        let store =
            Store::connect(&config.store, &opts)
                .await
                .map_err(|err| match &config.store {
                    StoreConfig::Sled => StartError::Store {
                        dir: dir.clone(),
                        err,
                    },
                    StoreConfig::Redis(r) => StartError::Shared {
                        at: r.describe(),
                        err,
                    },
                })?;
        tracing::info!(store = %describe_store(&config), "store opened");
        let (master, source) =
            crate::store::secret::load(config.secrets_file.as_deref(), &config.data_dir, &store)
                .await
                .map_err(|e| StartError::Secret(e.to_string()))?;
        tracing::info!(from = %source, "master secret loaded");
        let jwt = crate::jwt::keys_at(&master, clock.now());
        let code_key = master.code_key();
        let secret = master.derive("portcullis server");
        let mailer = Mailer::new(&config.email).map_err(|e| StartError::Mail(e.to_string()))?;
        let mail_templates = MailTemplates::new(
            config.email.text_template.clone(),
            config.email.html_template.clone(),
        )
        .map_err(StartError::Templates)?;
        let pages = Pages::new(&config.branding).map_err(StartError::Templates)?;
        let tls = match &config.tls {
            Some(t) => Some(
                crate::server::tls::server_config(&t.cert, &t.key)
                    .map_err(|e| StartError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let clients = (0..worker_count())
            .map(|_| upstream_client())
            .collect::<Result<Vec<_>, _>>()?;
        let wire_pools = (0..worker_count())
            .map(|_| {
                Arc::new(crate::proxy::wire::Pool::new(
                    crate::proxy::wire::POOL_MAX_IDLE,
                ))
            })
            .collect();
        Ok(AppState {
            config: ArcSwap::from_pointee(config),
            store,
            mailer: ArcSwap::from_pointee(mailer),
            mail_templates: ArcSwap::from_pointee(mail_templates),
            tls: arc_swap::ArcSwapOption::new(tls),
            pages,
            clock,
            clients,
            wire_pools,
            master,
            code_key,
            secret,
            limiter: RateLimiter::default(),
            metrics: Metrics::default(),
            outbox_wake: Notify::new(),
            jwt: ArcSwap::new(jwt),
            instance_id: crate::crypto::random_bytes(3)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }

    /// The current configuration (lock-free load).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Replaces the configuration and what is built from it (reload). Route counters carry over by name.
    pub fn set_config(&self, mut config: Config) -> Result<(), String> {
        let templates = MailTemplates::new(
            config.email.text_template.clone(),
            config.email.html_template.clone(),
        )?;
        let mailer = Mailer::new(&config.email).map_err(|e| format!("email: {e}"))?;
        // Last of the fallible steps: once the pages are swapped, everything else is too.
        self.pages.reload(&config.branding)?;
        let old = self.config();
        for r in &mut config.routes {
            if let Some(o) = old.routes.iter().find(|o| o.name == r.name) {
                r.stats = o.stats.clone();
            }
        }
        self.mail_templates.store(Arc::new(templates));
        self.mailer.store(Arc::new(mailer));
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The identity assertion for `email` at `audience` (a host), if `headers.jwt` is configured.
    pub fn assertion(
        &self,
        cfg: &Config,
        email: &str,
        audience: &str,
    ) -> Option<(http::HeaderName, http::HeaderValue)> {
        let name = cfg.headers.jwt.clone()?;
        let token = self.jwt.load().assertion(
            &cfg.public_origin(),
            email,
            audience,
            self.clock.now(),
            cfg.headers.jwt_ttl.as_secs(),
        );
        Some((name, http::HeaderValue::from_str(&token).ok()?))
    }

    /// An email address as logs may show it: `a***@example.com` unless `log_emails` is on.
    pub fn mask(&self, email: &str) -> String {
        if self.config.load().log_emails {
            return email.to_string();
        }
        mask_email(email)
    }
}

/// Which store a configuration uses, in words (logs, `portcullis check`).
pub fn describe_store(cfg: &Config) -> String {
    match &cfg.store {
        StoreConfig::Sled => format!("sled in {}", cfg.data_dir.join("db").display()),
        StoreConfig::Redis(r) => format!("redis at {} (keys `{}*`)", r.describe(), r.prefix),
    }
}

impl AppState {
    /// Writes an audit log line (target `portcullis::audit`) and remembers the event for the
    /// admin page (in the store: every replica shows every event).
    pub async fn audit(&self, event: &'static str, email: &str, ip: &str, detail: &str) {
        let shown = self.mask(email);
        match event {
            "code_failed" | "lockout" | "denied" | "cross_origin" => {
                tracing::warn!(target: "portcullis::audit", event, email = %shown, ip, detail, "security event")
            }
            _ => {
                tracing::info!(target: "portcullis::audit", event, email = %shown, ip, detail, "security event")
            }
        }
        let e = AuditEvent {
            at: self.clock.now(),
            event: event.to_string(),
            email: email.to_string(),
            ip: ip.to_string(),
            detail: detail.to_string(),
        };
        if let Err(err) = self.store.push_event(&e).await {
            tracing::warn!(error = %err, event, "cannot keep the security event for the admin page");
        }
    }
}

/// Connection workers: one single-threaded runtime per CPU (at least 1, at most 64).
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 64)
}

impl AppState {
    /// The upstream client of a connection worker.
    pub fn client(&self, worker: usize) -> &UpstreamClient {
        &self.clients[worker % self.clients.len()]
    }

    /// The own-client connection pool of a connection worker.
    pub fn wire_pool(&self, worker: usize) -> &Arc<crate::proxy::wire::Pool> {
        &self.wire_pools[worker % self.wire_pools.len()]
    }
}

/// Masks the local part of an address, keeping its first character and the domain.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

fn upstream_client() -> Result<UpstreamClient, StartError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    // System roots (where operators add their private CA); an empty store just fails https upstreams.
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping unreadable system certificate");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        roots = added,
        "loaded system trust roots for https upstreams"
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(512)
        .build(https))
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_local_part() {
        assert_eq!(super::mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(super::mask_email("nope"), "***");
    }
}
