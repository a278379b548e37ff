//! Notes printed under clap's usage errors, saying where a bad setting came from: clap sees the
//! environment and the `--config` file (folded in as flags) but reports every value as if it
//! were typed as a flag, so `SWITCHBOARD_GRACE=abc` read as "invalid value for '--grace'".
use std::ffi::OsString;
use std::path::Path;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use switchboard_core::config::env_var_for;

/// Where the settings of one run came from.
pub struct Sources<'a, E> {
    /// The arguments as typed.
    pub typed: &'a [OsString],
    /// Flags appended from the config file (`--key=value`).
    pub from_file: &'a [OsString],
    /// The config file, if one was read.
    pub file: Option<&'a Path>,
    /// Environment lookup.
    pub env: E,
}

/// One line per note for `err` (without a `note: ` prefix); empty when clap said it all.
pub fn notes<E: Fn(&str) -> Option<OsString>>(
    err: &clap::Error,
    src: &Sources<'_, E>,
) -> Vec<String> {
    let flags: Vec<String> = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for flag in flags.iter().filter_map(|f| flag_name(f)) {
        let var = env_var_for(flag);
        let file_key = src.file.filter(|_| has_flag(src.from_file, flag));
        match err.kind() {
            ErrorKind::MissingRequiredArgument => {
                out.push(format!("--{flag} may also be set with the environment variable {var}"));
            }
            ErrorKind::UnknownArgument => {
                if let Some(file) = file_key {
                    out.push(format!(
                        "`{flag}` is a key in the config file {}; this command has no --{flag}",
                        file.display()
                    ));
                }
            }
            _ if has_flag(src.typed, flag) => {}
            _ => {
                if (src.env)(&var).is_some() {
                    out.push(format!("the value comes from the environment variable {var}"));
                } else if let Some(file) = file_key {
                    out.push(format!(
                        "the value comes from `{flag}` in the config file {}",
                        file.display()
                    ));
                }
            }
        }
    }
    out
}

/// `grace` from `--grace <GRACE>` or `--grace=abc`; `None` for positionals.
fn flag_name(shown: &str) -> Option<&str> {
    let name = shown.strip_prefix("--")?;
    name.split([' ', '=']).next().filter(|n| !n.is_empty())
}

/// Whether `args` hold `--flag` (as `--flag value` or `--flag=value`).
fn has_flag(args: &[OsString], flag: &str) -> bool {
    let long = format!("--{flag}");
    args.iter().filter_map(|a| a.to_str()).any(|a| {
        a == long || a.strip_prefix(long.as_str()).is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_are_read_from_clap_renderings() {
        assert_eq!(flag_name("--grace <GRACE>"), Some("grace"));
        assert_eq!(flag_name("--bogus=1"), Some("bogus"));
        assert_eq!(flag_name("--serve-api"), Some("serve-api"));
        assert_eq!(flag_name("<PATH>"), None);
    }
}
