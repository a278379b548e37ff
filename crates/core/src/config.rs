//! Configuration precedence: command-line flags > `SWITCHBOARD_*` environment variables >
//! an optional TOML file > built-in defaults.
//!
//! clap already handles flags, env vars and defaults. The TOML file is folded in *before*
//! clap parses: [`expand_args`] appends `--key=value` for every key in the file that is
//! neither on the command line nor in the environment. So clap stays the single place that
//! validates and documents every setting.
//!
//! File layout: top-level keys are global flags; tables are scoped to subcommands, nested
//! the way the command line is (`[presence.gateway]` applies to `switchboard presence gateway`).
//!
//! ```toml
//! log-format = "json"
//! [presence.status]
//! bus = "nats://127.0.0.1:4222"
//! store = "postgres://switchboard@127.0.0.1/switchboard"
//! ```
use std::ffi::OsString;
use std::path::PathBuf;

use crate::{Error, Result};

/// Environment variable naming the TOML file when `--config` is not given.
pub const CONFIG_ENV: &str = "SWITCHBOARD_CONFIG";

/// The env var clap reads for flag `--name`: `SWITCHBOARD_` + upper snake case.
pub fn env_var_for(flag: &str) -> String {
    format!("SWITCHBOARD_{}", flag.replace('-', "_").to_ascii_uppercase())
}

/// A flag struct filled from `argv` and the built-in defaults of its `#[arg]` attributes
/// alone: how the demo, the benchmarks and tests build a role's settings, so every default
/// lives once, where `--help` documents it. The environment is not read: `SWITCHBOARD_*`
/// names are shared by every role (`SWITCHBOARD_LISTEN`, `SWITCHBOARD_BUS`), and a
/// variable exported for one role must not reach the others running in the same process.
///
/// # Panics
/// `argv` does not parse: a bug in the caller's built-in flags, which its tests catch.
pub fn flags<T: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> T {
    without_env::<T>()
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m))
        .unwrap_or_else(|e| panic!("built-in flags {argv:?} do not parse: {e}"))
}

/// `T`'s flags as a command that reads no environment variable.
fn without_env<T: clap::Args>() -> clap::Command {
    T::augment_args(clap::Command::new("switchboard").no_binary_name(true))
        .mut_args(|a| a.env(None))
}

/// Returns `args` with the TOML config file's settings appended as flags (after every original
/// argument, so `out[args.len()..]` are the file's).
///
/// `env` looks up an environment variable (pass `|k| std::env::var_os(k)`); it is a
/// parameter so tests need not touch the process environment.
///
/// # Errors
/// The file named by `--config`/`SWITCHBOARD_CONFIG` cannot be read or is not valid TOML.
pub fn expand_args(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<OsString>> {
    let Some(path) = file_path(&args, &env) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| Error::ConfigRead { path: path.clone(), source })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::ConfigParse {
        path: path.clone(),
        message: e.to_string(),
    })?;

    // Walk the subcommand path through nested tables, collecting scalar keys; deeper wins.
    let mut settings: Vec<(String, toml::Value)> = Vec::new();
    collect_scalars(&table, &mut settings);
    let mut current = &table;
    for word in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if word.starts_with('-') {
            continue;
        }
        if let Some(toml::Value::Table(sub)) = current.get(word) {
            collect_scalars(sub, &mut settings);
            current = sub;
        }
    }

    let mut out = args;
    let mut seen = std::collections::HashSet::new();
    for (key, value) in settings.into_iter().rev() {
        if !seen.insert(key.clone()) || key == "config" {
            continue; // a deeper table already set it
        }
        let flag = format!("--{key}");
        let on_cli = out
            .iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == flag || a.strip_prefix(&flag).is_some_and(|rest| rest.starts_with('=')));
        if on_cli || env(&env_var_for(&key)).is_some() {
            continue;
        }
        match value {
            toml::Value::Array(items) => {
                for item in items {
                    out.push(format!("{flag}={}", scalar_text(&item)).into());
                }
            }
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            other => out.push(format!("{flag}={}", scalar_text(&other)).into()),
        }
    }
    Ok(out)
}

/// The TOML file [`expand_args`] reads: `--config FILE`, else `SWITCHBOARD_CONFIG`, else none.
pub fn file_path(args: &[OsString], env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    config_path(args).or_else(|| env(CONFIG_ENV).map(PathBuf::from))
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    None
}

fn collect_scalars(table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        if !v.is_table() {
            out.push((k.clone(), v.clone()));
        }
    }
}

fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_the_documented_defaults_and_never_the_environment() {
        let http: crate::http::HttpArgs = flags(&[]);
        assert_eq!(http.header_timeout, crate::http::DEFAULT_HEADER_TIMEOUT);
        let http: crate::http::HttpArgs = flags(&["--header-timeout", "3s"]);
        assert_eq!(http.header_timeout, std::time::Duration::from_secs(3));
        // Where the role reads `SWITCHBOARD_HEADER_TIMEOUT`, `flags` reads nothing.
        let env = |c: &clap::Command| c.get_arguments().filter(|a| a.get_env().is_some()).count();
        let role = <crate::http::HttpArgs as clap::Args>::augment_args(clap::Command::new("t"));
        assert_eq!(env(&role), 1);
        assert_eq!(env(&without_env::<crate::http::HttpArgs>()), 0);
    }

    #[test]
    #[should_panic(expected = "do not parse")]
    fn flags_that_do_not_parse_are_a_bug() {
        let _: crate::http::HttpArgs = flags(&["--header-timeout", "soon"]);
    }

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn no_config_leaves_args_alone() {
        let a = args(&["sb", "demo"]);
        assert_eq!(expand_args(a.clone(), |_| None).unwrap(), a);
    }

    #[test]
    fn file_fills_only_what_flags_and_env_leave_open() {
        let f = file(
            "log-format = \"json\"\n[presence]\nbus = \"memory://\"\n[presence.status]\nbus = \"nats://x\"\nstore = \"sqlite://y\"\nlisten = \"1\"\n",
        );
        let p = f.path().to_str().unwrap();
        let out =
            expand_args(args(&["sb", "--config", p, "presence", "status", "--listen", "2"]), |k| {
                (k == "SWITCHBOARD_STORE").then(|| "env".into())
            })
            .unwrap();
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap().to_owned()).collect();
        assert!(out.contains(&"--bus=nats://x".to_owned()), "{out:?}");
        assert!(out.contains(&"--log-format=json".to_owned()));
        assert!(!out.iter().any(|a| a.starts_with("--store")), "env wins over file");
        assert!(!out.contains(&"--listen=1".to_owned()), "flag wins over file");
    }

    #[test]
    fn bad_file_is_a_clear_error() {
        let f = file("this is = = not toml");
        let err = expand_args(args(&["sb", "--config", f.path().to_str().unwrap()]), |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("invalid config file"), "{err}");
        let err = expand_args(args(&["sb", "--config=/nonexistent/x.toml"]), |_| None).unwrap_err();
        assert!(err.to_string().contains("cannot read config file"), "{err}");
    }

    #[test]
    fn env_names_follow_flags() {
        assert_eq!(env_var_for("admin-addr"), "SWITCHBOARD_ADMIN_ADDR");
    }
}
