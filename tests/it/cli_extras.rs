//! The binary's self-description: `--version`, `completions bash|zsh|fish` and `man`, generated from
//! the one clap definition, each checked for what a shell or `man` needs from it.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Every command a user can type; `bench-seed` is hidden and must stay out of completions and man.
const COMMANDS: [&str; 7] = [
    "serve",
    "check",
    "sessions",
    "list",
    "revoke",
    "completions",
    "man",
];

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "portcullis {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Feeds `input` to `program args` and returns its output, or `None` when the program is not
/// installed (the syntax checks below are extras; the text checks run everywhere).
fn pipe_through(program: &str, args: &[&str], input: &str) -> Option<Output> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("cli_extras: {program} not installed, its syntax check is skipped");
            return None;
        }
        Err(e) => panic!("{program}: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn version_is_the_package_version() {
    let want = format!("portcullis {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(stdout_of(&["--version"]), want);
    assert_eq!(stdout_of(&["-V"]), want);
}

#[test]
fn completions_offer_every_command_in_bash_zsh_and_fish() {
    for (shell, marker, option) in [
        ("bash", "complete -F _portcullis", "--config"),
        ("zsh", "#compdef portcullis", "--config"),
        ("fish", "complete -c portcullis", "-l config"),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no `{marker}`:\n{script}");
        for cmd in COMMANDS {
            assert!(script.contains(cmd), "{shell}: `{cmd}` missing:\n{script}");
        }
        assert!(
            script.contains(option),
            "{shell}: options are not completed:\n{script}"
        );
        assert!(
            !script.contains("bench-seed") && !script.contains("bench_seed"),
            "{shell}: offers the hidden bench-seed command"
        );
    }
    // The shell itself accepts the script.
    let bash = stdout_of(&["completions", "bash"]);
    if let Some(out) = pipe_through("bash", &["-n"], &bash) {
        assert!(
            out.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn completions_refuse_an_unknown_shell_with_the_choices() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}

#[test]
fn man_prints_one_page_covering_every_command() {
    let page = stdout_of(&["man"]);
    assert!(
        page.contains(&format!(
            ".TH portcullis 1  \"portcullis {}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{page}"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH COMMANDS",
    ] {
        assert!(page.contains(section), "{section} missing:\n{page}");
    }
    for cmd in [
        "serve",
        "check",
        "sessions list",
        "sessions revoke",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!(".SS \"portcullis {cmd}\"")),
            "no subsection for `portcullis {cmd}`:\n{page}"
        );
    }
    // Options are documented under their command, and nothing points at pages that do not exist.
    assert!(page.contains("Configuration file (YAML)"), "{page}");
    assert!(!page.contains("portcullis\\-serve(1)"), "{page}");
    assert!(
        !page.contains("bench"),
        "the hidden bench-seed is listed:\n{page}"
    );
    // roff's preamble once, then one heading per section: no clap_mangen render doubled.
    assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
    assert_eq!(page.matches(".SH SYNOPSIS").count(), 1, "{page}");
    // groff reads it without a warning (-ww: all warnings; -z: no output).
    if let Some(out) = pipe_through("groff", &["-man", "-Tutf8", "-ww", "-z"], &page) {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
    }
}

fn repo_file(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check_file(path: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("config OK"),
        "portcullis check {}: {stdout}{}\n--- the file:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    stdout
}

/// What the Debian package installs fits together: the unit starts the packaged binary with the
/// packaged config, which passes `check` and keeps its data in the unit's StateDirectory.
/// (`packaging/check-deb.sh` checks the built package itself.)
#[test]
fn the_packaged_config_passes_check_and_agrees_with_the_unit_and_the_package() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stdout = check_file(&root.join("packaging/portcullis.yaml"));
    assert!(stdout.contains("/var/lib/portcullis"), "{stdout}");
    let config = repo_file("packaging/portcullis.yaml");
    assert!(
        config.lines().any(|l| l == "data_dir: /var/lib/portcullis"),
        "{config}"
    );

    let unit = repo_file("systemd/portcullis.service");
    for line in [
        "ExecStartPre=/usr/bin/portcullis check --config /etc/portcullis/portcullis.yaml",
        "ExecStart=/usr/bin/portcullis serve --config /etc/portcullis/portcullis.yaml",
        "StateDirectory=portcullis",
        "DynamicUser=yes",
        "WorkingDirectory=/var/lib/portcullis",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks `{line}`");
    }

    let cargo = repo_file("Cargo.toml");
    let deb = cargo
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("Cargo.toml has no [package.metadata.deb]");
    for wanted in [
        r#"["target/release/portcullis", "usr/bin/", "755"]"#,
        r#"["packaging/portcullis.yaml", "etc/portcullis/portcullis.yaml", "644"]"#,
        r#"conf-files = ["/etc/portcullis/portcullis.yaml"]"#,
        r#"unit-scripts = "systemd/""#,
        r#"maintainer-scripts = "packaging/debian/""#,
    ] {
        assert!(deb.contains(wanted), "the deb metadata lacks {wanted}");
    }
    // Every asset the package takes from the repository exists (cargo deb would fail late).
    for line in deb.lines().filter(|l| l.trim_start().starts_with("[\"")) {
        let source = line.split('"').nth(1).unwrap();
        if source.starts_with("target/") {
            continue;
        }
        let path = root.join(source.trim_end_matches("/*"));
        assert!(path.exists(), "deb asset {source} does not exist");
    }
    assert!(root.join("systemd/portcullis.service").is_file());
    let postrm = repo_file("packaging/debian/postrm");
    // cargo-deb puts its systemd snippets where this token stands, wherever it stands (a second
    // copy in a comment once broke the script).
    assert_eq!(postrm.matches("#DEBHELPER#").count(), 1, "{postrm}");
}

/// Every ```yaml block of docs/deployment.md is a whole configuration that `portcullis check`
/// accepts. systemd's credential folder is stood in for by a temporary one with placeholder files
/// (`check` requires them to exist; `serve` reads them).
#[test]
fn the_deployment_guide_configs_pass_check() {
    let guide = repo_file("docs/deployment.md");
    let blocks: Vec<&str> = guide
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 3, "{} yaml blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for name in ["tls.crt", "tls.key", "smtp-password"] {
        std::fs::write(creds.join(name), "placeholder\n").unwrap();
    }
    let creds_prefix = format!("{}/", creds.display());
    for (i, block) in blocks.iter().enumerate() {
        let text = block.replace("/run/credentials/portcullis.service/", &creds_prefix);
        let path = dir.path().join(format!("guide-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let stdout = check_file(&path);
        assert!(!stdout.contains("warning"), "{stdout}");
    }
}
