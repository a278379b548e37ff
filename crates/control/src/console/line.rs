//! The console's command language.
//!
//! ```text
//! script  := command (';' command)*
//! command := [ '@' agent | 'all' ] verb args
//! verb    := start | stop | terminate | ping | calculate <x> <msg>     (sent to agents)
//!          | agents | use <agent|all> | wait | help | quit | exit      (local)
//! ```
//! Words split on whitespace; `"…"` (with `\"` and `\\` escapes) and `'…'` quote.
use crate::op::{Limits, Op};

/// Where an agent command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The agent chosen with `use`, or every agent if none is.
    Default,
    /// Every attached agent.
    All,
    /// One named agent.
    Agent(String),
}

/// One parsed console command.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Nothing to do (blank or comment).
    Empty,
    /// Print the help text.
    Help,
    /// List attached agents.
    Agents,
    /// Choose the default target (`None`: all agents).
    Use(Option<String>),
    /// Wait until every calculation started from this console has finished.
    Wait,
    /// Leave the console.
    Quit,
    /// Send `op` to `target`.
    Send {
        /// Which agents.
        target: Target,
        /// What to do.
        op: Op,
    },
}

/// First words the console understands (for completion and help).
pub const VERBS: &[&str] =
    &["start", "stop", "terminate", "ping", "calculate", "agents", "use", "wait", "help", "quit"];

/// The help text.
pub const HELP: &str = "\
commands (prefix with `@<agent>` or `all` to choose targets; default: the `use`d agent, else all):
  start                 make agents ready
  stop                  make agents unready
  ping                  ask for the agent's Unix time (ready only)
  calculate <x> <msg>   simulate x seconds of work, then print msg (ready only; runs concurrently)
  terminate             cancel work; the agent exits
  agents                list attached agents
  use <agent>|all       choose the default target
  wait                  wait for every calculation started here to finish
  help                  this text
  quit                  leave the console
separate several commands with `;`. quote messages: calculate 2.5 \"hello world\"";

/// Splits a script into commands at `;` outside quotes.
pub fn split_script(script: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in script.chars() {
        let cur = out.last_mut().expect("never empty");
        match (quote, c) {
            (Some('"'), _) if escaped => escaped = false,
            (Some('"'), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ';' | '\n') => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// Splits one command into words, honouring quotes.
///
/// # Errors
/// A quote is not closed.
pub fn words(input: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => loop {
                    match chars.next() {
                        Some('\\') => word.push(chars.next().ok_or("unterminated \" quote")?),
                        Some('"') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                },
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                },
                c => word.push(c),
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// Parses one command. `limits` are the console's own sanity bounds for `calculate`;
/// agents apply theirs again.
///
/// # Errors
/// A clear message: unknown verb, missing or extra argument, invalid number.
pub fn parse(input: &str, limits: &Limits) -> Result<Line, String> {
    let words = words(input)?;
    let mut rest = words.as_slice();
    let Some(first) = rest.first() else { return Ok(Line::Empty) };
    if first.starts_with('#') {
        return Ok(Line::Empty);
    }
    let target = if let Some(name) = first.strip_prefix('@') {
        rest = &rest[1..];
        if name.is_empty() {
            return Err("`@` needs an agent name, e.g. `@agent-1 ping`".into());
        }
        Target::Agent(name.to_owned())
    } else if first == "all" {
        rest = &rest[1..];
        Target::All
    } else {
        Target::Default
    };
    let Some((verb, args)) = rest.split_first() else {
        return Err("a target needs a command, e.g. `all ping`".into());
    };
    let local = target == Target::Default;
    let op = match (verb.as_str(), args) {
        ("help" | "?", []) if local => return Ok(Line::Help),
        ("agents", []) if local => return Ok(Line::Agents),
        ("wait", []) if local => return Ok(Line::Wait),
        ("quit" | "exit", []) if local => return Ok(Line::Quit),
        ("use", [name]) if local => {
            return Ok(Line::Use((name != "all").then(|| name.clone())));
        }
        ("help" | "?" | "agents" | "wait" | "quit" | "exit" | "use", _) if !local => {
            return Err(format!("`{verb}` is a console command and takes no target"));
        }
        ("start", []) => Op::Start,
        ("stop", []) => Op::Stop,
        ("terminate", []) => Op::Terminate,
        ("ping", []) => Op::Ping,
        ("calculate", [x, msg]) => {
            let x: f64 = x.parse().map_err(|_| format!("x must be a number, got `{x}`"))?;
            Op::calculate(x, msg.clone(), limits).map_err(|r| r.reason)?
        }
        ("calculate", _) => return Err("usage: calculate <x seconds> <msg>".into()),
        ("use", _) => return Err("usage: use <agent>|all".into()),
        (v, _) if VERBS.contains(&v) || v == "exit" => {
            return Err(format!("`{v}` takes no arguments here; type `help`"));
        }
        (v, _) => return Err(format!("unknown command `{v}`; type `help`")),
    };
    Ok(Line::Send { target, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Line, String> {
        parse(s, &Limits::default())
    }

    #[test]
    fn parses_targets_and_arguments() {
        assert_eq!(p("ping").unwrap(), Line::Send { target: Target::Default, op: Op::Ping });
        assert_eq!(
            p(r#"@a-1 calculate 2.5 "hello \"big\" world""#).unwrap(),
            Line::Send {
                target: Target::Agent("a-1".into()),
                op: Op::Calculate { x: 2.5, msg: r#"hello "big" world"#.into() }
            }
        );
        assert_eq!(p("all start").unwrap(), Line::Send { target: Target::All, op: Op::Start });
        assert_eq!(p("use all").unwrap(), Line::Use(None));
        assert_eq!(p("use a").unwrap(), Line::Use(Some("a".into())));
        assert_eq!(p("  # comment").unwrap(), Line::Empty);
        assert_eq!(
            p("calculate 1 'it''s'").unwrap(),
            Line::Send { target: Target::Default, op: Op::Calculate { x: 1.0, msg: "its".into() } }
        );
    }

    #[test]
    fn refuses_with_clear_messages() {
        assert!(p("rm -rf /").unwrap_err().contains("unknown command `rm`"));
        assert!(p("calculate NaN x").unwrap_err().contains("finite"));
        assert!(p("calculate -1 x").unwrap_err().contains("within"));
        assert!(p("calculate abc x").unwrap_err().contains("must be a number"));
        assert!(p("calculate 1").unwrap_err().contains("usage"));
        assert!(p("ping now").unwrap_err().contains("no arguments"));
        assert!(p("@ ping").unwrap_err().contains("agent name"));
        assert!(p("all").unwrap_err().contains("needs a command"));
        assert!(p("all agents").unwrap_err().contains("takes no target"));
        assert!(p("calculate 1 \"open").unwrap_err().contains("unterminated"));
    }

    proptest::proptest! {
        /// Fuzz: whatever an operator (or a piped file) types, parsing answers, never panics.
        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,64}") {
            for command in split_script(&input) {
                let _ = p(&command);
            }
        }
    }

    #[test]
    fn scripts_split_outside_quotes() {
        assert_eq!(
            split_script(r#"start; calculate 1 "a;b" ; ping;;"#),
            vec!["start", r#"calculate 1 "a;b""#, "ping"]
        );
        assert_eq!(split_script("start\nping"), vec!["start", "ping"]);
    }
}
