//! Authentication: addresses, challenges (link + code), sessions, rate limits, redirect policy, endpoints.

pub mod account;
pub mod address;
pub mod challenge;
pub mod device;
pub mod flash;
pub mod handlers;
pub mod policy;
pub mod regulation;
pub mod session;
