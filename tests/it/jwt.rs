//! Signed identity (`headers.jwt`): EdDSA assertions that an independent JWT library
//! (`jsonwebtoken`) verifies against `/.auth/jwks.json`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::upstream::echoed;
use crate::support::{Http, Req, TestGateway, Upstream};

pub const JWT_HEADER: &str = "x-portcullis-jwt-assertion";

/// The claims Portcullis promises.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub email: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// `GET /.auth/jwks.json` of the gateway at `base`.
pub async fn jwks(base: &str) -> Value {
    let r = Http::new(base).send(Req::get("/.auth/jwks.json")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/jwk-set+json"),
        "{:?}",
        r.header("content-type")
    );
    r.json()
}

/// Verifies `token` the way an upstream would: the key named by its `kid` in `jwks`, EdDSA only,
/// audience and issuer checked, `exp`/`nbf` against the wall clock.
pub fn verify(
    jwks: &Value,
    token: &str,
    audience: &str,
    issuer: &str,
) -> Result<Claims, jsonwebtoken::errors::Error> {
    let header = decode_header(token)?;
    let kid = header.kid.ok_or(ErrorKind::InvalidToken)?;
    let key = jwks["keys"]
        .as_array()
        .ok_or(ErrorKind::InvalidKeyFormat)?
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or(ErrorKind::InvalidKeyFormat)?;
    let x = key["x"].as_str().ok_or(ErrorKind::InvalidKeyFormat)?;
    let key = DecodingKey::from_ed_components(x)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    decode::<Claims>(token, &key, &v).map(|d| d.claims)
}

/// A gateway with `headers.jwt` in front of an echo upstream (`/public/` is public).
async fn gateway() -> (TestGateway, Upstream) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([{"host": "*", "upstream": up.url, "public_paths": ["/public/"]}]),
        )
        .set("headers.jwt", "X-Portcullis-Jwt-Assertion")
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    (gw, up)
}

fn authed(gw: &TestGateway, token: &str) -> Http {
    let c = gw.http();
    c.set_cookie("portcullis_session", token);
    c
}

/// The one assertion an echo response shows.
fn assertion(v: &Value) -> String {
    let all = echoed(v, JWT_HEADER);
    assert_eq!(all.len(), 1, "exactly one assertion: {all:?}");
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_carry_an_assertion_that_verifies() {
    let (gw, _up) = gateway().await;
    // Signed in with a mixed-case address: the claims carry the canonical one.
    let c = gw
        .http()
        .send(Req::post("/.auth/api/login").json(&json!({"email": "Alice@Example.COM"})))
        .await;
    assert_eq!(c.status, StatusCode::OK);
    let code = gw.mail("alice@example.com").await.code();
    let r = gw
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({
            "challenge_id": c.json()["challenge_id"], "code": code, "issue_token": true,
        })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["session_token"].as_str().unwrap().to_string();
    let c = authed(&gw, &token);
    let keys = jwks(&gw.base).await;

    let forged = "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImV2aWxAeC5jb20ifQ.";
    let r = c
        .send(
            Req::get("/reports")
                .header("host", "App.Example.com:8443")
                .header("x-portcullis-jwt-assertion", forged)
                .header("X_Portcullis_Jwt_Assertion", forged),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let jwt = assertion(&v);
    assert_ne!(jwt, forged, "the client's assertion was passed on");
    assert!(echoed(&v, "x_portcullis_jwt_assertion").is_empty());

    let claims = verify(&keys, &jwt, "app.example.com", &gw.base)
        .unwrap_or_else(|e| panic!("the assertion does not verify: {e}: {jwt}"));
    assert_eq!(claims.sub, "alice@example.com");
    assert_eq!(claims.email, "alice@example.com");
    assert_eq!(claims.aud, "app.example.com");
    assert_eq!(claims.iss, gw.base);
    assert!(
        claims.exp > claims.iat && claims.exp - claims.iat <= 300,
        "{claims:?}"
    );
    assert_eq!(claims.exp - claims.iat, 120, "default jwt_ttl is 2m");
    assert!(claims.nbf <= claims.iat);
    let now = portcullis::Clock::now(&gw.clock);
    assert!(
        claims.iat.abs_diff(now) <= 60,
        "iat {} vs now {now}",
        claims.iat
    );

    // The audience and issuer are checked, not just the signature.
    let err = verify(&keys, &jwt, "other.example.com", &gw.base).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidAudience);
    let err = verify(&keys, &jwt, "app.example.com", "https://evil.example.com").unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidIssuer);

    // The header names the published key; the JWKS holds public keys only.
    let header = decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.unwrap();
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid not in the JWKS");
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    for k in keys["keys"].as_array().unwrap() {
        assert!(
            k.get("d").is_none(),
            "the JWKS publishes a private key: {k}"
        );
    }

    // Without a port in Host the audience is the bare host.
    let r = c.send(Req::get("/plain")).await;
    let claims = verify(&keys, &assertion(&r.json()), "127.0.0.1", &gw.base).unwrap();
    assert_eq!(claims.aud, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_carry_no_assertion_and_forged_ones_are_removed() {
    let (gw, up) = gateway().await;
    let r = gw
        .http()
        .send(Req::get("/public/app.js").header("x-portcullis-jwt-assertion", "forged"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(echoed(&r.json(), JWT_HEADER).is_empty());
    assert_eq!(up.seen().len(), 1);
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_assertions_fail_verification() {
    let (gw, _up) = gateway().await;
    let token = gw.sign_in("bob@example.com").await;
    let r = authed(&gw, &token).send(Req::get("/t")).await;
    let jwt = assertion(&r.json());
    let keys = jwks(&gw.base).await;
    verify(&keys, &jwt, "127.0.0.1", &gw.base).expect("the genuine assertion verifies");

    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    // Another address in the payload, signature kept.
    claims["email"] = json!("mallory@example.com");
    claims["sub"] = json!("mallory@example.com");
    let t = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let err = verify(&keys, &t, "127.0.0.1", &gw.base).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidSignature, "{t}");

    // A flipped bit in the signature.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[7] ^= 1;
    let t = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    let err = verify(&keys, &t, "127.0.0.1", &gw.base).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidSignature);

    // A longer lifetime.
    let mut c2: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    c2["exp"] = json!(c2["exp"].as_u64().unwrap() + 86400);
    let t = format!("{}.{}.{}", parts[0], b64(&c2), parts[2]);
    assert!(verify(&keys, &t, "127.0.0.1", &gw.base).is_err());

    // `alg: none` without a signature.
    let none = json!({"alg": "none", "typ": "JWT", "kid": decode_header(&jwt).unwrap().kid});
    let t = format!("{}.{}.", b64(&none), parts[1]);
    assert!(verify(&keys, &t, "127.0.0.1", &gw.base).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_carry_the_assertion() {
    let (gw, _up) = gateway().await;
    let token = gw.sign_in("carol@example.com").await;
    let c = authed(&gw, &token);
    let keys = jwks(&gw.base).await;

    let r = c
        .send(
            Req::get("/.auth/check/forward")
                .header("x-forwarded-host", "127.0.0.1")
                .header("x-forwarded-uri", "/"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers.get_all(JWT_HEADER).iter().count(), 1);
    let claims = verify(&keys, &r.header(JWT_HEADER).unwrap(), "127.0.0.1", &gw.base).unwrap();
    assert_eq!(claims.email, "carol@example.com");

    // For a trusted proxy's original request the audience is the original host.
    let r = c
        .send(
            Req::get("/.auth/check")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "Grafana.Example.com:443")
                .header("x-forwarded-uri", "/d/1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let claims = verify(
        &keys,
        &r.header(JWT_HEADER).unwrap(),
        "grafana.example.com",
        &gw.base,
    )
    .unwrap();
    assert_eq!(claims.sub, "carol@example.com");
    let r = c
        .send(
            Req::get("/.auth/check/nginx").header("x-original-url", "https://Wiki.Example.com./p"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    verify(
        &keys,
        &r.header(JWT_HEADER).unwrap(),
        "wiki.example.com",
        &gw.base,
    )
    .unwrap();

    // No session, or a public path without one: no assertion.
    let anon = gw.http();
    let r = anon.send(Req::get("/.auth/check")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header(JWT_HEADER).is_none());
    let r = anon
        .send(
            Req::get("/.auth/check")
                .header("x-forwarded-host", "127.0.0.1")
                .header("x-forwarded-uri", "/public/x.css"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Present but empty, so a proxy copying it never forwards a placeholder.
    assert_eq!(r.header(JWT_HEADER).as_deref(), Some(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_survive_a_restart() {
    let (mut gw, _up) = gateway().await;
    let token = gw.sign_in("dan@example.com").await;
    let before = jwks(&gw.base).await;
    let r = authed(&gw, &token).send(Req::get("/before")).await;
    let old = assertion(&r.json());
    let kid = decode_header(&old).unwrap().kid.unwrap();

    gw.restart_with(|cfg| cfg["headers"]["jwt_ttl"] = json!("5m"))
        .await;
    let after = jwks(&gw.base).await;
    assert_eq!(before, after, "the key set changed across a restart");
    // An assertion issued before the restart still verifies with the published keys.
    verify(&after, &old, "127.0.0.1", &gw.base).unwrap();

    let r = authed(&gw, &token).send(Req::get("/after")).await;
    let new = assertion(&r.json());
    assert_eq!(
        decode_header(&new).unwrap().kid.unwrap(),
        kid,
        "same signing key"
    );
    let claims = verify(&after, &new, "127.0.0.1", &gw.base).unwrap();
    assert_eq!(claims.exp - claims.iat, 300, "jwt_ttl: 5m");
}
