//! A full disk, made without root by running the real binary under a small `RLIMIT_FSIZE` (writes
//! past it fail with `EFBIG`): sign-in answers 503 (never 500) and readiness says so; once the
//! limit is raised with prlimit(1) the same process recovers by itself. Skipped with a `SKIPPED`
//! line on stderr when prlimit is missing, unless `PORTCULLIS_REQUIRE_SYSTEM_SERVERS=1`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use crate::support::process::{write_yaml, Served, Setup, BIN};
use crate::support::{Http, Req};

/// The file size limit in the shell's `ulimit -f` blocks (512 or 1024 bytes): a database of
/// 1–2 MiB, filled by a few hundred sign-ins.
const LIMIT_BLOCKS: u32 = 2048;

/// prlimit(1) from util-linux, or `None` (and a visible `SKIPPED` line) when it is missing.
fn prlimit() -> Option<PathBuf> {
    crate::support::system_binary("prlimit", &["/usr/bin/prlimit"], "util-linux")
}

/// A sign-in request for `email`: its status, error code and `Retry-After`.
async fn ask(http: &Http, email: &str) -> (StatusCode, String, Option<String>) {
    let r = http
        .send(Req::post("/.auth/api/login").json(&json!({ "email": email })))
        .await;
    assert_ne!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "sign-in answered 500: {}",
        r.text()
    );
    let code = if r.status == StatusCode::OK {
        String::new()
    } else {
        r.error_code().to_string()
    };
    (r.status, code, r.header("retry-after"))
}

/// Asks for sign-ins until one fails, which must be a 503 `storage_unavailable` with
/// `Retry-After` (never a 500). Returns how many succeeded.
async fn fill(http: &Http, prefix: &str) -> usize {
    for i in 0..20_000 {
        let (status, code, retry) = ask(http, &format!("{prefix}{i}@example.com")).await;
        if status == StatusCode::OK {
            continue;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{code}");
        assert_eq!(code, "storage_unavailable");
        assert!(retry.is_some(), "503 without Retry-After");
        return i;
    }
    panic!("the database never filled up");
}

/// GET `path` with the session cookie `token`.
async fn with_session(base: &str, token: &str, path: &str) -> StatusCode {
    let c = Http::new(base);
    c.set_cookie("portcullis_session", token);
    c.send(Req::get(path)).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_recovers_by_itself_when_space_returns() {
    let Some(prlimit) = prlimit() else { return };
    let setup = Setup::new();
    write_yaml(&setup.config, &setup.base());
    // An ignored SIGXFSZ stays ignored across exec: writes past the limit fail with EFBIG instead
    // of killing the process. Only the soft limit is lowered, so it can be raised again.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -S -f {LIMIT_BLOCKS}; exec \"$0\" serve --config \"$1\""
        ))
        .arg(BIN)
        .arg(&setup.config);
    // The log is under the same limit: keep it short.
    let mut served = Served::launch(
        cmd,
        &setup.dir.path().join("serve.log"),
        setup.port,
        &[("PORTCULLIS_LOG", "warn,portcullis::store=info")],
    )
    .await;
    let pid = served.child.id();
    let base = setup.base_url();
    let http = served.http();

    let early = setup.sign_in("early@example.com").await;
    assert_eq!(with_session(&base, &early, "/x").await, StatusCode::OK);

    // Fill the disk until sign-in fails: 503 with Retry-After and a clear code, never 500.
    let filled = fill(&http, "fill").await;
    eprintln!("sign-in failed after {filled} sign-ins");

    // While the limit is in place: the gateway retries (reopening the database, which may find
    // room in freed segments for a few more writes), but never answers 500, readiness follows
    // the store, and a signed-in user keeps working from reads.
    let until = Instant::now() + Duration::from_secs(6);
    let (mut reads_ok, mut unready) = (0, 0);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let (status, code, _) = ask(&http, &format!("more{i}@example.com")).await;
        assert!(
            status == StatusCode::OK || code == "storage_unavailable",
            "{status} {code}"
        );
        let r = http.send(Req::get("/.auth/readyz")).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.json()["store"], false);
            unready += 1;
        } else {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
        assert_eq!(
            http.send(Req::get("/.auth/healthz")).await.status,
            StatusCode::OK
        );
        // 503 only for the moment of a reopen.
        match with_session(&base, &early, "/x").await {
            StatusCode::OK => reads_ok += 1,
            s => assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(unready > 0, "readyz never said the store cannot write");
    assert!(
        reads_ok > 0,
        "no signed-in request worked while the disk was full"
    );
    // Full again at the moment space returns. (Readiness was shown to report the failure above;
    // it is not asserted again here: a reopen can find a little room sled freed, so readiness
    // flaps while the disk stays full, and which side of a flap a probe lands on is timing.)
    fill(&http, "last").await;

    // Space returns: raise the soft limit of the running process.
    let ok = Command::new(&prlimit)
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--fsize=unlimited:")
        .status()
        .unwrap();
    assert!(ok.success(), "prlimit failed");
    let raised = Instant::now();
    loop {
        let (status, code, _) = ask(&http, "again@example.com").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{code}");
        assert!(
            raised.elapsed() < Duration::from_secs(20),
            "sign-in did not recover within 20 s:\n{}",
            served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "sign-in recovered {:?} after space returned",
        raised.elapsed()
    );

    // Everything works again, in the same process.
    let later = setup.sign_in("later@example.com").await;
    let r = http.send(Req::get("/.auth/readyz")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(http.send(Req::get("/.auth/healthz")).await.text(), "ok\n");
    assert_eq!(with_session(&base, &early, "/x").await, StatusCode::OK);
    assert_eq!(
        with_session(&base, &early, "/.auth/api/session").await,
        StatusCode::OK
    );
    assert_eq!(with_session(&base, &later, "/x").await, StatusCode::OK);
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "the gateway exited"
    );
    assert_eq!(served.child.id(), pid);
    served.stop();
}
