//! Just enough of a Dockerfile to know how the image runs: `ENTRYPOINT` and `CMD` (exec form
//! `["a","b"]` and shell form `a b` → `["/bin/sh","-c","a b"]`), `WORKDIR` and `ENV`, of the
//! final stage (a stage built `FROM` an earlier one inherits its settings). Nothing is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The run settings of an image, stored as `.aloft/image.json`. The agent uses `entrypoint`
/// followed by `cmd` unless the machine config overrides them (a group command replaces `cmd`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
struct Stage {
    config: ImageConfig,
    /// CMD came from a parent stage: a new ENTRYPOINT resets it, as Docker does.
    cmd_inherited: bool,
}

/// Parses Dockerfile text. Errors name the line: `line 4: ENV needs a value`.
pub fn parse(text: &str) -> Result<ImageConfig, String> {
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current = Stage::default();
    // Name of the stage being read (`FROM x AS name`), to let later stages inherit from it.
    let mut current_name: Option<String> = None;
    for (line_no, instr) in logical_lines(text) {
        let (word, rest) = match instr.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (instr.as_str(), ""),
        };
        let err = |msg: &str| format!("line {line_no}: {msg}");
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let base = words.first().copied().unwrap_or("").to_ascii_lowercase();
                current = match stages.get(&base) {
                    Some(parent) => Stage {
                        config: parent.config.clone(),
                        cmd_inherited: true,
                    },
                    None => Stage::default(),
                };
                current_name = (words.len() >= 3 && words[1].eq_ignore_ascii_case("as"))
                    .then(|| words[2].to_ascii_lowercase());
            }
            "CMD" => {
                current.config.cmd = command(rest);
                current.cmd_inherited = false;
            }
            "ENTRYPOINT" => {
                current.config.entrypoint = command(rest);
                if current.cmd_inherited {
                    current.config.cmd.clear();
                    current.cmd_inherited = false;
                }
            }
            "WORKDIR" => {
                if rest.is_empty() {
                    return Err(err("WORKDIR needs a path"));
                }
                let dir = unquote(rest);
                current.config.workdir =
                    Some(match (&current.config.workdir, dir.starts_with('/')) {
                        (Some(prev), false) => format!("{}/{dir}", prev.trim_end_matches('/')),
                        _ => dir,
                    });
            }
            "ENV" => {
                for (k, v) in env_pairs(rest).map_err(|m| err(&m))? {
                    current.config.env.insert(k, v);
                }
            }
            _ => {}
        }
        if let Some(name) = &current_name {
            stages.insert(name.clone(), current.clone());
        }
    }
    Ok(current.config)
}

/// Joins continuation lines (trailing `\`) and drops comments and blank lines; yields the
/// 1-based number of each instruction's first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && !buf.is_empty()) {
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if buf.is_empty() {
            start = i + 1;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                buf.push_str(head.trim_end());
                buf.push(' ');
            }
            None => {
                buf.push_str(line);
                out.push((start, std::mem::take(&mut buf).trim().to_string()));
            }
        }
    }
    if !buf.trim().is_empty() {
        out.push((start, buf.trim().to_string()));
    }
    out
}

/// Exec form (a JSON array of strings) or shell form.
fn command(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(rest) {
            return argv;
        }
    }
    if rest.is_empty() {
        return Vec::new();
    }
    vec!["/bin/sh".into(), "-c".into(), rest.into()]
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// `ENV k=v k2="a b"` or the legacy `ENV k some value`.
fn env_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err("ENV needs a name and a value".into());
    }
    if !first.contains('=') {
        let value = rest[first.len()..].trim();
        if value.is_empty() {
            return Err(format!("ENV {first} needs a value"));
        }
        return Ok(vec![(first.to_string(), value.to_string())]);
    }
    let words = shlex::split(rest).ok_or_else(|| "ENV has unbalanced quotes".to_string())?;
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("ENV expects NAME=VALUE, got {w:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exec_and_shell_forms() {
        let c = parse(
            "FROM debian\nENTRYPOINT [\"/app/entrypoint.sh\"]\nCMD [\"python3\", \"web.py\"]\n",
        )
        .unwrap();
        assert_eq!(c.entrypoint, v(&["/app/entrypoint.sh"]));
        assert_eq!(c.cmd, v(&["python3", "web.py"]));
        let c = parse("from debian\ncmd echo $HOME && sleep 1\n").unwrap();
        assert_eq!(c.cmd, v(&["/bin/sh", "-c", "echo $HOME && sleep 1"]));
        assert!(c.entrypoint.is_empty());
        let c = parse("FROM x\nCMD [not json\n").unwrap();
        assert_eq!(
            c.cmd,
            v(&["/bin/sh", "-c", "[not json"]),
            "invalid JSON falls back to shell form"
        );
    }

    #[test]
    fn continuations_comments_workdir_env() {
        let text = "# syntax\nFROM debian:bookworm\nWORKDIR /app\nWORKDIR sub\nENV A=1 B=\"two words\"\nENV LEGACY some value\n\
                    RUN apt-get update \\\n  # a comment inside\n  && apt-get install -y curl\nCMD python3 \\\n    web.py\n";
        let c = parse(text).unwrap();
        assert_eq!(c.workdir.as_deref(), Some("/app/sub"));
        assert_eq!(c.env["A"], "1");
        assert_eq!(c.env["B"], "two words");
        assert_eq!(c.env["LEGACY"], "some value");
        assert_eq!(c.cmd, v(&["/bin/sh", "-c", "python3 web.py"]));
    }

    #[test]
    fn last_stage_wins_and_inherits_from_named_stages() {
        let text = "FROM node AS build\nWORKDIR /src\nCMD [\"npm\",\"test\"]\nFROM debian\nCMD [\"./serve\"]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.cmd, v(&["./serve"]));
        assert_eq!(c.workdir, None, "a fresh base does not inherit");
        let text =
            "FROM debian AS base\nWORKDIR /app\nCMD [\"a\"]\nFROM base\nENTRYPOINT [\"tini\"]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.workdir.as_deref(), Some("/app"));
        assert_eq!(c.entrypoint, v(&["tini"]));
        assert!(c.cmd.is_empty(), "ENTRYPOINT resets an inherited CMD");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("FROM x\n\nENV\n").unwrap_err(),
            "line 3: ENV needs a name and a value"
        );
        assert_eq!(
            parse("FROM x\nENV K\n").unwrap_err(),
            "line 2: ENV K needs a value"
        );
    }
}
