//! Sending mail: SMTP (lettre), log (prints the mail, for trying it out) or file (.eml files).

pub mod outbox;
pub mod templates;

use std::path::PathBuf;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailConfig, MailTransport, SmtpSecurity};

/// A rendered mail, link and code included. Built by the outbox worker just before sending and
/// dropped right after: it is deliberately not serializable, and its `Debug` shows no body.
pub struct Outgoing {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// When the mail was asked for (names `.eml` files).
    pub created_at: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a mail could not be sent (retried by the outbox).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot build message: {0}")]
    Build(String),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
}

/// The configured transport.
pub enum Mailer {
    /// The transport and how many mails it may send at once.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, usize),
    Log,
    File(PathBuf),
}

impl Mailer {
    /// Builds the transport; SMTP connections are made lazily (and pooled) on first send.
    pub fn new(cfg: &EmailConfig) -> Result<Mailer, MailError> {
        Ok(match &cfg.transport {
            MailTransport::Log => Mailer::Log,
            MailTransport::File(dir) => {
                std::fs::create_dir_all(dir)?;
                Mailer::File(dir.clone())
            }
            MailTransport::Smtp(s) => {
                let builder = match s.security {
                    SmtpSecurity::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    }
                    SmtpSecurity::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)?
                    }
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)?,
                };
                let pool = lettre::transport::smtp::PoolConfig::new().max_size(s.max_connections);
                let mut builder = builder
                    .port(s.port)
                    .timeout(Some(s.timeout))
                    .pool_config(pool);
                if let (Some(u), Some(p)) = (&s.username, &s.password) {
                    builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
                }
                Mailer::Smtp(builder.build(), s.max_connections as usize)
            }
        })
    }

    /// Sends one mail.
    pub async fn send(&self, from: &Mailbox, item: &Outgoing) -> Result<(), MailError> {
        let message = build_message(from, item)?;
        match self {
            Mailer::Smtp(t, _) => {
                t.send(message).await?;
            }
            Mailer::Log => {
                // The demo transport: the person trying Portcullis copies the link from here.
                println!(
                    "\n=== portcullis mail (transport: log) ===\nTo: {}\nSubject: {}\n\n{}\n=== end of mail ===\n",
                    item.to, item.subject, item.text
                );
            }
            Mailer::File(dir) => {
                let name = format!(
                    "{}-{}.eml",
                    item.created_at,
                    &crate::crypto::random_id()[..8]
                );
                let tmp = dir.join(format!(".{name}.tmp"));
                tokio::fs::write(&tmp, message.formatted()).await?;
                tokio::fs::rename(&tmp, dir.join(name)).await?;
            }
        }
        Ok(())
    }

    /// How many mails may be in flight at once.
    pub fn parallelism(&self) -> usize {
        match self {
            Mailer::Smtp(_, n) => (*n).max(1),
            Mailer::Log => 1,
            Mailer::File(_) => 4,
        }
    }

    /// Whether the transport is usable now (SMTP: connects and says NOOP).
    pub async fn healthy(&self) -> bool {
        match self {
            Mailer::Smtp(t, _) => t.test_connection().await.unwrap_or(false),
            Mailer::Log => true,
            Mailer::File(dir) => dir.is_dir(),
        }
    }
}

fn build_message(from: &Mailbox, item: &Outgoing) -> Result<Message, MailError> {
    // The recipient is the canonical address the gateway checked, never user-supplied text.
    let to: lettre::Address = item
        .to
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(item.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            item.text.clone(),
            item.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}
