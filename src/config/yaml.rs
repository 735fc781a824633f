//! Reading the YAML into the raw configuration: syntax errors with their line and a plain-words hint, and every unknown key at once with its line and a "did you mean" from the keys allowed there.

use serde_yaml::Value;

use super::file::RawConfig;

/// At most this many unknown keys are collected (each costs one more pass).
const MAX_UNKNOWN: usize = 50;

/// The raw configuration, or every problem found reading it (each starting with its line when
/// known).
pub fn read(text: &str) -> Result<RawConfig, Vec<String>> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| vec![syntax(text, &e)])?;
    let mut problems = Vec::new();
    for _ in 0..MAX_UNKNOWN {
        let de = value.clone();
        match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => return Err(by_line(problems)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                match unknown_field(&inner) {
                    Some((key, expected)) => {
                        let parent = parent_of(&path);
                        problems.push(unknown(text, &parent, &key, &expected));
                        if !remove(&mut value, &parent, &key) {
                            return Err(by_line(problems));
                        }
                    }
                    None => {
                        // A wrong type or value: the typed parse of the text knows its line.
                        let located = match serde_yaml::from_str::<RawConfig>(text) {
                            Err(e2) if unknown_field(&e2.to_string()).is_none() => {
                                located_message(&e2)
                            }
                            _ => format!("{}: {}", shown(&path), strip_location(&inner)),
                        };
                        problems.push(located);
                        return Err(by_line(problems));
                    }
                }
            }
        }
    }
    Err(by_line(problems))
}

/// Problems in the order of the file (those without a line last).
fn by_line(mut problems: Vec<String>) -> Vec<String> {
    problems.sort_by_key(|p| {
        p.strip_prefix("line ")
            .and_then(|r| r.split([':', ' ']).next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    problems
}

fn shown(path: &str) -> String {
    if path.is_empty() || path == "." {
        "the file".into()
    } else {
        path.to_string()
    }
}

/// `key` and the allowed keys from serde's "unknown field `key`, expected one of `a`, `b`".
fn unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

/// The path of the map holding the field that failed (serde_path_to_error's path ends with it).
fn parent_of(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((p, _)) => p.to_string(),
        None if path.ends_with(']') || path == "." => String::new(),
        None => String::new(),
    }
}

fn unknown(text: &str, parent: &str, key: &str, expected: &[String]) -> String {
    let at = if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    };
    let line = line_of_key(text, key)
        .map(|l| format!("line {l}: "))
        .unwrap_or_default();
    let hint = match suggestion(key, expected) {
        Some(s) => format!("; did you mean `{s}`?"),
        None if expected.is_empty() => String::new(),
        None => format!("; allowed here: {}", expected.join(", ")),
    };
    format!("{line}{at}: unknown key `{key}`{hint}")
}

/// The closest allowed key, if it is close enough to be a typo.
fn suggestion<'a>(key: &str, expected: &'a [String]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (distance(&lower, e), e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

/// Levenshtein distance over bytes (keys are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The first line (1-based) where `key:` is written as a key.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            let t = t.trim_start_matches(['"', '\'']);
            t.strip_prefix(key).is_some_and(|r| {
                let r = r.trim_start_matches(['"', '\'']);
                r.starts_with(':')
            })
        })
        .map(|i| i + 1)
}

/// Removes `key` from the map at `parent` (`a.b[2].c` as serde_path_to_error writes it).
fn remove(root: &mut Value, parent: &str, key: &str) -> bool {
    let mut cur = root;
    if !parent.is_empty() {
        for seg in parent.split('.') {
            let (name, indexes) = match seg.find('[') {
                Some(i) => (&seg[..i], &seg[i..]),
                None => (seg, ""),
            };
            if !name.is_empty() {
                let Some(next) = cur.get_mut(name) else {
                    return false;
                };
                cur = next;
            }
            for idx in indexes.split('[').filter(|s| !s.is_empty()) {
                let Ok(n) = idx.trim_end_matches(']').parse::<usize>() else {
                    return false;
                };
                let Some(next) = cur.get_mut(n) else {
                    return false;
                };
                cur = next;
            }
        }
    }
    match cur.as_mapping_mut() {
        Some(m) => m.remove(key).is_some(),
        None => false,
    }
}

fn strip_location(msg: &str) -> String {
    msg.rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or_else(|| msg.to_string())
}

fn located_message(e: &serde_yaml::Error) -> String {
    let msg = strip_location(&e.to_string());
    match e.location() {
        Some(loc) => format!("line {} column {}: {msg}", loc.line(), loc.column()),
        None => msg,
    }
}

/// A YAML syntax error with its line and what usually causes it.
fn syntax(text: &str, e: &serde_yaml::Error) -> String {
    let msg = located_message(e);
    let line_text = e
        .location()
        .and_then(|l| text.lines().nth(l.line().saturating_sub(1)))
        .unwrap_or("");
    let raw = e.to_string();
    let hint = if text
        .lines()
        .any(|l| l.starts_with('\t') || l.trim_start_matches(' ').starts_with('\t'))
    {
        Some("YAML indents with spaces only; this file has a tab at the start of a line")
    } else if raw.contains("did not find expected ',' or ']'")
        || raw.contains("did not find expected ',' or '}'")
        || (raw.contains("end of the stream")
            && (text.matches('[').count() != text.matches(']').count()
                || text.matches('{').count() != text.matches('}').count()))
    {
        Some("a `[` or `{` is not closed")
    } else if raw.contains("mapping values are not allowed") {
        Some("a value with `: ` in it must be quoted, or the line is indented wrongly")
    } else if raw.contains("did not find expected key") || raw.contains("block mapping") {
        Some("the indentation does not line up with the keys around it")
    } else if raw.contains("found character that cannot start any token") && line_text.contains('`')
    {
        Some("a value starting with ` or @ must be quoted")
    } else {
        None
    };
    match hint {
        Some(h) => format!("{msg} (hint: {h})"),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        read(text).err().unwrap_or_default()
    }

    #[test]
    fn every_unknown_key_at_once_with_a_suggestion_and_its_line() {
        let p = problems(
            "public_url: \"http://127.0.0.1:8080\"\nacess:\n  allowed_domains: [example.com]\nlogin:\n  tll: 15m\n  code_length: 6\nroutes:\n  - host: a.example.com\n    upstream: builtin:whoami\n    acces: {}\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("line 2: acess: unknown key `acess`; did you mean `access`?"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("line 5: login.tll: unknown key `tll`; did you mean `ttl`?"),
            "{p:?}"
        );
        assert!(
            p[2].contains("routes[0].acces") && p[2].contains("did you mean `access`"),
            "{p:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line_and_a_hint() {
        let p = problems("public_url: x\nlogin:\n\tttl: 15m\n");
        assert!(p[0].starts_with("line 3") && p[0].contains("tab"), "{p:?}");
        let p = problems("public_url: x\naccess:\n  allowed_domains: [example.com\n");
        assert!(
            p[0].starts_with("line ") && p[0].contains("not closed"),
            "{p:?}"
        );
    }

    #[test]
    fn a_far_off_key_lists_what_is_allowed() {
        let p = problems("public_url: x\nzzzzzz: 1\n");
        assert!(
            p[0].contains("allowed here:") && p[0].contains("public_url"),
            "{p:?}"
        );
    }

    #[test]
    fn wrong_types_keep_their_line() {
        let p = problems("public_url: x\nlogin:\n  code: maybe\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("line 3"), "{p:?}");
    }
}
