//! Portcullis integration tests: a real gateway on loopback with a real SMTP server, a real echo upstream and a real sled store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod api;
mod apps;
mod at_rest;
mod bypass;
mod cli;
mod cli_extras;
mod conformance;
mod connections;
mod disk_full;
mod durability;
mod floods;
mod flow;
mod footprint;
mod forward_auth;
mod h2_wire;
mod jwt;
mod ops;
mod own_loop;
mod pages;
mod proxy;
mod replicas;
mod routes;
mod security;
mod sessions;
mod upstream_wire;
mod websocket_revoke;
