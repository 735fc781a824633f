//! The futures every proxied request builds stay small: each `.await` of a fresh future and each
//! spawn (hyper's HTTP/2 server spawns one per request) moves the whole future, so KiBs of rarely
//! used state held inline cost copies on every request (they did: 9 KiB per request future, about
//! 37 KiB copied per HTTP/2 request). Sizes are of types, the same whatever the values.

use std::sync::Arc;

use portcullis::http::ConnInfo;
use portcullis::request::ClientBody;

use crate::support::*;

/// The request future's budget (this test build; it was 9,024 bytes before the large, rarely
/// taken branches were boxed: the auth endpoints, hyper's client, Redis commands, and about
/// 1 KiB more while each layer took the request by value and kept it twice).
const REQUEST_FUTURE_MAX: usize = 3 * 1024;
/// A response's budget (312 bytes while the answer's body held its upstream connection inline).
const RESPONSE_MAX: usize = 256;
/// A store read's budget (a Redis command's future is over 4 KiB, boxed inside the store).
const STORE_FUTURE_MAX: usize = 256;

#[tokio::test]
async fn the_request_future_and_the_store_reads_it_awaits_stay_small() {
    let gw = TestGateway::start().await;
    let state = gw.state().clone();
    let conn = ConnInfo {
        peer: "127.0.0.1:9".parse().unwrap(),
        tls: false,
        worker: 0,
        upstream: Arc::default(),
    };
    let mut req = http::Request::new(ClientBody::Empty);
    let request = portcullis::http::router::handle(&state, &mut req, &conn);
    let request_size = std::mem::size_of_val(&request);
    drop(request);
    // What every layer returns (and so copies on the way out): the upstream connection the
    // answer's body reads from is boxed, not carried inline.
    let response_size = std::mem::size_of::<http::Response<portcullis::http::response::Body>>();
    let hash = [0u8; 32];
    let session = state.store.session(&hash);
    let session_size = std::mem::size_of_val(&session);
    drop(session);
    println!(
        "request future: {request_size} bytes; session read: {session_size} bytes; response: {response_size} bytes"
    );
    assert!(
        response_size <= RESPONSE_MAX,
        "a response is {response_size} bytes (budget {RESPONSE_MAX}): is the upstream connection inline in its body?"
    );
    assert!(
        session_size <= STORE_FUTURE_MAX,
        "a session read's future is {session_size} bytes (budget {STORE_FUTURE_MAX}): is a backend's future held inline?"
    );
    assert!(
        request_size <= REQUEST_FUTURE_MAX,
        "the request future is {request_size} bytes (budget {REQUEST_FUTURE_MAX}): box large branches the proxied path does not take"
    );
}
