//! Portcullis: a passwordless (magic link + one-time code) authentication gateway in front of web apps.

pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod jwt;
pub mod logsink;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod request;
pub mod routing;
pub mod server;
pub mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use server::Listeners;
pub use state::AppState;

/// A built gateway: state plus bound listeners, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    pub listeners: Listeners,
}

impl App {
    /// Opens the store, builds every component and binds the configured addresses.
    pub async fn build(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
        let listeners = Listeners::bind(&config).await?;
        Self::with_listeners(config, clock, listeners).await
    }

    /// Like [`App::build`] with sockets bound by the caller (tests bind port 0 first).
    pub async fn with_listeners(
        config: Config,
        clock: Arc<dyn Clock>,
        listeners: Listeners,
    ) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
        let state = Arc::new(AppState::new(config, clock).await?);
        Ok(App { state, listeners })
    }

    /// Serves until `shutdown` resolves; then drains connections and flushes the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        server::run(self.state, self.listeners, shutdown).await
    }
}
