//! Secrets at rest: the data folder is private whatever the umask, no link or code the SMTP
//! server ever received is anywhere on disk (not even in sled's log, not after a kill -9), the
//! master secret lives outside the database, and JWT keys derived from it agree across replicas.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use jsonwebtoken::decode_header;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use portcullis::crypto::MasterSecret;
use serde_json::{json, Value};

use crate::jwt::{jwks, verify, JWT_HEADER};
use crate::support::process::{with, Setup};
use crate::support::upstream::echoed;
use crate::support::{free_port, Mail, Req, TestGateway, WAIT};

/// The umask most shells give: files would be born 0644 and folders 0755.
fn typical_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}

/// Every entry below `dir` (not `dir` itself), folders included, links not followed.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let t = std::fs::symlink_metadata(&p).unwrap().file_type();
        out.push(p.clone());
        if t.is_dir() {
            out.extend(entries(&p));
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `data_dir` 0700, every folder in it 0700, every file (socket included) 0600.
fn assert_private(dir: &Path) -> usize {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let all = entries(dir);
    for p in &all {
        let m = std::fs::symlink_metadata(p).unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} is {:04o}", p.display(), mode(p));
    }
    all.len()
}

/// What a scan looks for: a name and the bytes.
type Needle = (String, Vec<u8>);

/// Every form a mail's link token and code could take on disk: as mailed, URL- and
/// percent-encoded (alone and inside the whole link), decoded to raw bytes, re-encoded as
/// standard base64 and hex, and halves of the token (a quoted-printable line break can split
/// it in two: one half of any split is at least 22 characters long, so a 20-character prefix
/// or suffix is always whole).
fn mail_needles(mail: &Mail) -> Vec<Needle> {
    let mut n: Vec<Needle> = Vec::new();
    if let Some(link) = mail.link_opt() {
        let token = mail.token();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for (what, bytes) in [
            ("token", token.clone().into_bytes()),
            ("token prefix", token.as_bytes()[..20].to_vec()),
            (
                "token suffix",
                token.as_bytes()[token.len() - 20..].to_vec(),
            ),
            (
                "token %-encoded",
                utf8_percent_encode(&token, NON_ALPHANUMERIC)
                    .to_string()
                    .into_bytes(),
            ),
            ("token raw bytes", raw.clone()),
            (
                "token as base64",
                base64::engine::general_purpose::STANDARD
                    .encode(&raw)
                    .into_bytes(),
            ),
            ("token as hex", hex.into_bytes()),
            ("link", link.clone().into_bytes()),
            (
                "link form-encoded",
                url::form_urlencoded::byte_serialize(link.as_bytes())
                    .collect::<String>()
                    .into_bytes(),
            ),
            (
                "link %-encoded",
                utf8_percent_encode(&link, NON_ALPHANUMERIC)
                    .to_string()
                    .into_bytes(),
            ),
        ] {
            n.push((format!("{what} of a mail to {:?}", mail.rcpt), bytes));
        }
    }
    if let Some(code) = mail.code_opt() {
        let v: u64 = code.parse().unwrap();
        for (what, bytes) in [
            ("code", code.clone().into_bytes()),
            ("code as u64 le", v.to_le_bytes().to_vec()),
            ("code as u64 be", v.to_be_bytes().to_vec()),
        ] {
            n.push((format!("{what} of a mail to {:?}", mail.rcpt), bytes));
        }
    }
    n
}

/// The forms a 32-byte key or the master secret could be written in.
fn key_needles(what: &str, raw: &[u8]) -> Vec<Needle> {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    vec![
        (format!("{what} raw"), raw.to_vec()),
        (format!("{what} hex"), hex.clone().into_bytes()),
        (format!("{what} HEX"), hex.to_uppercase().into_bytes()),
        (format!("{what} base64"), b64.into_bytes()),
        (format!("{what} base64url"), b64url.into_bytes()),
    ]
}

/// Reads every byte of every regular file under `dir` (recursively) and reports each needle
/// found, with the file. Returns (files read, bytes read, hits).
fn scan(dir: &Path, needles: &[Needle], skip: &[PathBuf]) -> (usize, u64, Vec<String>) {
    let (mut files, mut bytes, mut hits) = (0, 0u64, Vec::new());
    for p in entries(dir) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if !m.is_file() || skip.contains(&p) {
            continue;
        }
        let data = std::fs::read(&p).unwrap();
        files += 1;
        bytes += data.len() as u64;
        for (what, needle) in needles {
            if data.windows(needle.len()).any(|w| w == needle.as_slice()) {
                hits.push(format!("{what} in {}", p.display()));
            }
        }
    }
    (files, bytes, hits)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether some file under the data folder holds `probe` (proof that the scan sees the records).
fn on_disk(dir: &Path, probe: &str) -> bool {
    entries(dir)
        .iter()
        .filter(|p| p.is_file())
        .any(|p| contains(&std::fs::read(p).unwrap_or_default(), probe.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_is_private_whatever_the_umask() {
    typical_umask();
    let mut gw = TestGateway::start().await;
    gw.sign_in("perm@example.com").await;
    gw.browser_sign_in("perm2@example.com").await;
    gw.api_login("perm3@example.com").await;
    gw.mail("perm3@example.com").await;
    gw.state().store.flush_blocking().unwrap();
    let n = assert_private(gw.dir.path());
    assert!(
        gw.dir.path().join("secret").is_file(),
        "the master secret has its own file"
    );
    assert!(n >= 4, "db, conf, secret, socket ...: {n}");

    // An operator (or an old version) left it wide open: the next start tightens it all.
    gw.stop().await;
    for p in std::iter::once(gw.dir.path().to_path_buf()).chain(entries(gw.dir.path())) {
        let wide = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(wide)).unwrap();
    }
    assert_eq!(mode(gw.dir.path()), 0o755);
    gw.restart().await;
    gw.sign_in("perm4@example.com").await;
    gw.state().store.flush_blocking().unwrap();
    assert_private(gw.dir.path());
    // A data_dir that does not exist yet is made 0700 (and its database private) as well.
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().join("new/data");
    drop(portcullis::store::Store::open(&portcullis::store::StoreOptions::new(&dir)).unwrap());
    assert_private(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_or_code_the_smtp_server_received_is_anywhere_on_disk() {
    let mut gw = TestGateway::builder()
        .set("login.code_length", 10)
        .start()
        .await;
    // Code sign-in (API), link sign-in (API).
    gw.sign_in("code@example.com").await;
    gw.api_login("link@example.com").await;
    let token = gw.mail("link@example.com").await.token();
    let r = gw
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": token})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Browser: form, resend twice (old mails die), confirm page, then the newest link.
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "browser@example.com")]))
        .await;
    let first = gw.mail("browser@example.com").await;
    for _ in 0..2 {
        let r = b.send(Req::post("/.auth/resend")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        gw.mail("browser@example.com").await;
    }
    let r = gw.http().send(Req::get(&first.link())).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a resend kills the old link"
    );
    let newest = gw.smtp().mails_to("browser@example.com").pop().unwrap();
    let r = b.send(Req::get(&newest.link())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    // Pending: delivered, never redeemed, and kept across a restart.
    gw.api_login("pending@example.com").await;
    let pending = gw.mail("pending@example.com").await;
    gw.restart().await;
    let r = gw.http().send(Req::get(&pending.link())).await;
    assert_eq!(r.status, StatusCode::OK, "still valid after a restart");
    // One more sign-in after the restart; then the process writes everything it holds.
    gw.sign_in("after@example.com").await;
    gw.stop().await;

    let mails = gw.smtp().all();
    assert_eq!(mails.len(), 7);
    let needles: Vec<Needle> = mails.iter().flat_map(mail_needles).collect();
    assert_eq!(needles.len(), 7 * 13, "every mail had a link and a code");
    let (files, bytes, hits) = scan(gw.dir.path(), &needles, &[]);
    eprintln!(
        "at-rest scan (in process): {files} files, {bytes} bytes, {} mails, {} needles",
        mails.len(),
        needles.len()
    );
    assert!(hits.is_empty(), "secrets on disk:\n{}", hits.join("\n"));
    // The scan does see the records: the addresses and a challenge hash are there.
    assert!(on_disk(gw.dir.path(), "pending@example.com"));
    assert!(bytes > 10_000, "{bytes}");
}

/// The same with the shared store: nothing in Redis's append-only file (every value Redis ever
/// stored, deleted ones included) nor in its memory at the end holds a mailed link or code or a
/// session token; the gateway's own data folder holds none either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_code_or_session_token_is_in_redis() {
    let Some(redis) = crate::support::redis::RedisServer::start() else {
        return;
    };
    let mut gw = TestGateway::builder()
        .set("login.code_length", 10)
        .set("store", json!({"url": redis.url(), "prefix": "atrest:"}))
        .start()
        .await;
    let mut tokens = vec![gw.sign_in("code@example.com").await];
    gw.api_login("link@example.com").await;
    let token = gw.mail("link@example.com").await.token();
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify").json(&json!({"link_token": token, "issue_token": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    tokens.push(r.json()["session_token"].as_str().unwrap().to_string());
    gw.api_login("pending@example.com").await;
    gw.mail("pending@example.com").await;
    gw.stop().await;

    let mails = gw.smtp().all();
    assert_eq!(mails.len(), 3);
    let mut needles: Vec<Needle> = mails.iter().flat_map(mail_needles).collect();
    for t in &tokens {
        needles.push(("session token".into(), t.clone().into_bytes()));
        needles.push(("session token prefix".into(), t.as_bytes()[..20].to_vec()));
    }
    let (files, bytes, hits) = scan(redis.dir(), &needles, &[]);
    assert!(
        hits.is_empty(),
        "secrets in Redis's files:\n{}",
        hits.join("\n")
    );
    assert!(
        on_disk(redis.dir(), "pending@example.com"),
        "the scan sees Redis's records ({files} files, {bytes} bytes)"
    );
    // And what Redis holds now, value by value.
    let mut values = Vec::new();
    for key in redis.keys("atrest:*") {
        let t = redis
            .cmd(&["TYPE", &key])
            .unwrap()
            .text()
            .unwrap_or_default();
        let cmd: Vec<&str> = match t.as_str() {
            "string" => vec!["GET", &key],
            "hash" => vec!["HGETALL", &key],
            "list" => vec!["LRANGE", &key, "0", "-1"],
            "set" => vec!["SMEMBERS", &key],
            "zset" => vec!["ZRANGE", &key, "0", "-1"],
            _ => continue,
        };
        let reply = redis.cmd(&cmd).unwrap();
        let mut parts = vec![key.clone()];
        parts.extend(reply.text());
        parts.extend(reply.items().iter().filter_map(|r| r.text()));
        values.push(parts.join(" "));
    }
    let dump = values.join("\n");
    assert!(dump.contains("pending@example.com"), "{dump}");
    for (what, n) in &needles {
        if let Ok(text) = std::str::from_utf8(n) {
            assert!(!dump.contains(text), "{what} in Redis now");
        }
    }
    let (_, _, hits) = scan(gw.dir.path(), &needles, &[]);
    assert!(hits.is_empty(), "secrets in data_dir:\n{}", hits.join("\n"));
}

/// Mail accepted while SMTP is down survives `kill -9`; after the restart it goes out with a
/// freshly minted link and code that work, and neither those nor anything else mailed is on
/// disk (checked after a second `kill -9`). The binary runs under its own umask rules, in a
/// data folder that was created 0755.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_mail_pending_leaves_no_secret_on_disk() {
    typical_umask();
    let s = Setup::new();
    let data = s.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let down = with(s.base(), "email.smtp.port", json!(free_port()));
    let down = with(down, "login.code_length", json!(10));
    let mut served = s.serve(&down, &[]).await;
    let http = served.http();
    let mut ids = Vec::new();
    for e in ["a@example.com", "b@example.com"] {
        let r = http
            .send(Req::post("/.auth/api/login").json(&json!({ "email": e })))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        ids.push(r.json()["challenge_id"].as_str().unwrap().to_string());
    }
    let r = http
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": ids[1]})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let browser = served.http();
    browser
        .send(Req::post("/.auth/login").form(&[("email", "c@example.com")]))
        .await;
    // At least one attempt minted credentials and failed; then the process dies.
    served.wait_log("mail not sent; will retry").await;
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    drop(served);

    let up = with(s.base(), "login.code_length", json!(10));
    let mut served = s.serve(&up, &[]).await;
    let a = s.smtp.wait_for_mail("a@example.com", WAIT).await;
    let b = s.smtp.wait_for_mail("b@example.com", WAIT).await;
    let c = s.smtp.wait_for_mail("c@example.com", WAIT).await;
    // The mails work: a by code, b by link, c by code in the browser that asked.
    let r = served
        .http()
        .send(
            Req::post("/.auth/api/verify").json(&json!({"challenge_id": ids[0], "code": a.code()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = served
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": b.token()})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = browser
        .send(Req::post("/.auth/code").form(&[("code", &c.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    // b's first mail was replaced by its resend before it could go out: one mail, the newest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.smtp.mails_to("b@example.com").len(), 1);
    // A pending one, delivered but not redeemed, then a second crash.
    let r = served
        .http()
        .send(Req::post("/.auth/api/login").json(&json!({"email": "d@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.smtp.wait_for_mail("d@example.com", WAIT).await;
    served.child.kill().unwrap();
    served.child.wait().unwrap();

    let mails = s.smtp.all();
    assert_eq!(mails.len(), 4);
    let needles: Vec<Needle> = mails.iter().flat_map(mail_needles).collect();
    let (files, bytes, hits) = scan(&data, &needles, &[]);
    eprintln!(
        "at-rest scan (kill -9): {files} files, {bytes} bytes, {} mails, {} needles",
        mails.len(),
        needles.len()
    );
    assert!(hits.is_empty(), "secrets on disk:\n{}", hits.join("\n"));
    assert!(on_disk(&data, "d@example.com"));
    let n = assert_private(&data);
    assert!(n >= 4, "{n}");
}

/// A gateway signing assertions, with `secrets_file` set when given.
async fn jwt_gateway(secrets_file: Option<&Path>) -> TestGateway {
    let mut b = TestGateway::builder()
        .echo_upstream()
        .set("headers.jwt", "X-Portcullis-Jwt-Assertion")
        // Sessions outlive the rotation periods the tests step through.
        .set("session.ttl", "60d")
        .set("session.idle_timeout", "0");
    if let Some(p) = secrets_file {
        b = b.set("secrets_file", p.display().to_string());
    }
    b.start().await
}

/// One assertion the gateway attaches to a proxied request of `token`'s session.
async fn assertion(gw: &TestGateway, token: &str) -> String {
    let c = gw.http();
    c.set_cookie("portcullis_session", token);
    let r = c.send(Req::get("/x")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v: Value = r.json();
    echoed(&v, JWT_HEADER).pop().expect("no assertion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_file_gives_replicas_the_same_keys_and_stays_out_of_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis-secret");
    let raw: Vec<u8> = portcullis::crypto::random_bytes(48);
    let text = base64::engine::general_purpose::STANDARD.encode(&raw);
    std::fs::write(&file, format!("{text}\n")).unwrap();
    let one = jwt_gateway(Some(&file)).await;
    let two = jwt_gateway(Some(&file)).await;
    assert_ne!(one.dir.path(), two.dir.path());
    let (k1, k2) = (jwks(&one.base).await, jwks(&two.base).await);
    assert_eq!(k1, k2, "same master, same published keys");
    assert_eq!(k1["keys"].as_array().unwrap().len(), 2);

    // An assertion of one verifies against the other's key set, and vice versa.
    let t1 = assertion(&one, &one.sign_in("r@example.com").await).await;
    let t2 = assertion(&two, &two.sign_in("r@example.com").await).await;
    assert_eq!(
        decode_header(&t1).unwrap().kid,
        decode_header(&t2).unwrap().kid
    );
    verify(&k2, &t1, "127.0.0.1", &one.base).unwrap();
    verify(&k1, &t2, "127.0.0.1", &two.base).unwrap();
    // A gateway with a secret of its own does not accept them.
    let other = jwt_gateway(None).await;
    let k3 = jwks(&other.base).await;
    assert_ne!(k3, k1);
    assert!(verify(&k3, &t1, "127.0.0.1", &one.base).is_err());

    // Neither data folder holds the master or anything derived from it.
    let master = MasterSecret::parse(text.as_bytes()).unwrap();
    let now = portcullis::Clock::now(&one.clock);
    let period = now / portcullis::jwt::ROTATE_AFTER;
    let mut needles = key_needles("master", &raw);
    needles.extend(key_needles("code key", &master.code_key()));
    needles.extend(key_needles(
        "server key",
        &master.derive("portcullis server"),
    ));
    for p in [period - 1, period, period + 1] {
        needles.extend(key_needles(&format!("jwt seed {p}"), &master.jwt_seed(p)));
    }
    let mut stopped = [one, two];
    for gw in &mut stopped {
        gw.stop().await;
        assert!(
            !gw.dir.path().join("secret").exists(),
            "secret copied into data_dir"
        );
        let (files, bytes, hits) = scan(gw.dir.path(), &needles, &[]);
        eprintln!(
            "master scan: {files} files, {bytes} bytes, {} needles",
            needles.len()
        );
        assert!(hits.is_empty(), "{}", hits.join("\n"));
        assert_private(gw.dir.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secrets_file_the_master_is_a_private_file_and_not_in_the_database() {
    let mut gw = jwt_gateway(None).await;
    gw.sign_in("m@example.com").await;
    gw.stop().await;
    let path = gw.dir.path().join("secret");
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read(&path).unwrap();
    let master = MasterSecret::parse(&text).unwrap();
    let raw_hex = String::from_utf8(text).unwrap();
    let raw: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw_hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    let period = portcullis::Clock::now(&gw.clock) / portcullis::jwt::ROTATE_AFTER;
    let mut needles = key_needles("master", &raw);
    needles.extend(key_needles("code key", &master.code_key()));
    needles.extend(key_needles("jwt seed", &master.jwt_seed(period)));
    let (_, _, hits) = scan(gw.dir.path(), &needles, std::slice::from_ref(&path));
    assert!(hits.is_empty(), "{}", hits.join("\n"));
    // Restarts keep it: the same keys are published.
    gw.restart().await;
    let before = jwks(&gw.base).await;
    gw.restart().await;
    assert_eq!(before, jwks(&gw.base).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_database_has_its_secrets_moved_out() {
    use portcullis::store::{Store, StoreOptions};
    let s = Setup::new();
    let data = s.dir.path().join("data");
    let legacy: Vec<u8> = portcullis::crypto::random_bytes(32);
    {
        let store = Store::open(&StoreOptions::new(&data)).unwrap();
        store
            .sled()
            .unwrap()
            .meta_put("server_secret", legacy.clone())
            .unwrap();
        store
            .sled()
            .unwrap()
            .meta_put(
                "jwt_keys",
                br#"[{"kid":"k","seed":"c2VlZA==","created_at":1}]"#.to_vec(),
            )
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let mut served = s.serve(&s.base(), &[]).await;
    s.sign_in("old@example.com").await;
    served.stop();
    let file = std::fs::read(data.join("secret")).unwrap();
    assert_eq!(
        MasterSecret::parse(&file).unwrap(),
        MasterSecret::from_bytes(legacy).unwrap(),
        "the old secret moved to data_dir/secret"
    );
    let store = Store::open(&StoreOptions::new(&data)).unwrap();
    assert!(store
        .sled()
        .unwrap()
        .meta_get("server_secret")
        .unwrap()
        .is_none());
    assert!(store
        .sled()
        .unwrap()
        .meta_get("jwt_keys")
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemd_credential_is_the_master_when_given() {
    let s = Setup::new();
    let creds = s.dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let master = MasterSecret::generate();
    std::fs::write(creds.join("portcullis-secret"), master.to_hex()).unwrap();
    let cfg = with(s.base(), "headers.jwt", json!("X-Portcullis-Jwt-Assertion"));
    let mut served = s
        .serve(&cfg, &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())])
        .await;
    let keys = jwks(&served.base).await;
    let now = portcullis::Clock::now(&portcullis::SystemClock);
    let want: Value = serde_json::from_str(&portcullis::jwt::keys_at(&master, now).jwks).unwrap();
    assert_eq!(keys, want, "keys derived from the credential");
    served.stop();
    assert!(!s.dir.path().join("data/secret").exists());
}

#[test]
fn a_bad_secrets_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weak");
    std::fs::write(&file, "0123456789abcdef").unwrap();
    let yaml = format!(
        "public_url: http://127.0.0.1:1\nupstream: builtin:whoami\nsecrets_file: {}\n",
        file.display()
    );
    let err = portcullis::Config::parse(&yaml, Path::new("t.yaml")).unwrap_err();
    assert!(err.to_string().contains("secrets_file:"), "{err}");
    assert!(err.to_string().contains("at least 32"), "{err}");
    let yaml = yaml.replace(file.to_str().unwrap(), "/nonexistent/secret");
    let err = portcullis::Config::parse(&yaml, Path::new("t.yaml")).unwrap_err();
    assert!(
        err.to_string().contains("secrets_file: cannot read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_still_publishes_the_previous_key() {
    let mut gw = jwt_gateway(None).await;
    let token = gw.sign_in("rot@example.com").await;
    let old = assertion(&gw, &token).await;
    let old_kid = decode_header(&old).unwrap().kid.unwrap();
    let kids = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kids(&jwks(&gw.base).await)[0], old_kid);

    gw.clock.advance(portcullis::jwt::ROTATE_AFTER);
    gw.restart().await;
    let keys = jwks(&gw.base).await;
    let new = assertion(&gw, &token).await;
    let new_kid = decode_header(&new).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid, "a new period, a new key");
    assert_eq!(kids(&keys), vec![new_kid.clone(), old_kid.clone()]);
    verify(&keys, &old, "127.0.0.1", &gw.base).expect("the retired key still verifies");

    gw.clock.advance(portcullis::jwt::ROTATE_AFTER);
    gw.restart().await;
    let keys = jwks(&gw.base).await;
    assert!(
        !kids(&keys).contains(&old_kid),
        "retired for a whole period: gone"
    );
    assert!(kids(&keys).contains(&new_kid));
}
