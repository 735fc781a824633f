//! Process-wide counters for the sign-in funnel and traffic (lock-free atomics), rendered as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($name:ident => $help:literal),* $(,)?) => {
        /// Monotonic counters; each method adds one.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
        }
        impl Metrics {
            $(pub fn $name(&self) { self.$name.fetch_add(1, Relaxed); })*

            /// Prometheus text exposition of every counter.
            pub fn render(&self, out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP portcullis_{}_total {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE portcullis_{}_total counter", stringify!($name));
                    let _ = writeln!(out, "portcullis_{}_total {}", stringify!($name), self.$name.load(Relaxed));
                )*
            }
        }
    };
}

counters! {
    requests_proxied => "Requests forwarded to an upstream.",
    requests_unauthenticated => "Protected requests without a valid session.",
    requests_denied => "Requests with a session whose email is not allowed.",
    upstream_errors => "Requests that failed at the upstream (502/504).",
    mail_queued => "Sign-in mails queued.",
    mail_sent => "Sign-in mails delivered to the transport.",
    mail_failed => "Sign-in mails dropped after their challenge expired.",
    mail_retries => "Failed delivery attempts (retried with backoff).",
    links_opened => "Sign-in link pages opened (GET /.auth/verify).",
    signins => "Successful sign-ins.",
    codes_failed => "Wrong one-time codes.",
    rate_limited => "Requests refused by a rate limit.",
    login_denied => "Sign-in requests for addresses that may not sign in.",
}

impl Metrics {
    /// Reads a counter (tests and admin pages).
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
