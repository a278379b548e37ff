//! Where console commands come from and where output goes: a `--exec` script, lines piped
//! on stdin, or an interactive line editor (history, completion) when stdin is a terminal.
//!
//! The editor blocks, so it runs on its own OS thread and hands lines over a bounded channel
//! of one; its external printer lets replies appear above the prompt while the operator types.
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use super::line::VERBS;
use crate::fleet::Fleet;
use crate::{Error, Result};

/// Longest input line accepted from stdin; longer lines are refused, not buffered.
// Derived from the message limit: a `calculate` whose message is all quotes doubles in size
// once escaped, plus the verb, the target and `x`.
const MAX_LINE: usize = 2 * crate::op::MAX_MSG_BYTES + 1024;

/// Where commands come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A script given on the command line.
    Script(String),
    /// Lines on stdin (a pipe or file).
    Stdin,
    /// The interactive editor, with optional history file.
    Editor(Option<PathBuf>),
}

/// Console output: plain stdout, or the editor's printer (keeps the prompt intact).
#[derive(Clone)]
pub(crate) enum Printer {
    /// Write lines to stdout.
    Stdout,
    /// Print through the line editor.
    Editor(Arc<Mutex<Box<dyn ExternalPrinter + Send>>>),
}

impl Printer {
    /// Prints `text` as one or more lines.
    pub(crate) fn print(&self, text: String) {
        match self {
            Printer::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Printer::Editor(p) => {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                let _ = p.print(format!("{text}\n"));
            }
        }
    }
}

/// Operator input: lines, where to print, and (for the editor) when to prompt again.
pub(crate) struct Input {
    /// Input lines; closed at end of input.
    pub lines: mpsc::Receiver<String>,
    /// Where console output goes.
    pub printer: Printer,
    /// Tells the editor thread the last line is done (`true`: prompt again, `false`: leave).
    /// The editor waits for it, so the prompt follows the command's output, and it restores
    /// the terminal before the process exits.
    done: Option<std::sync::mpsc::SyncSender<bool>>,
}

impl Input {
    /// Reports that the last line has been handled; `more` is false when the console ends.
    pub(crate) fn line_done(&self, more: bool) {
        if let Some(done) = &self.done {
            let _ = done.send(more);
        }
    }
}

/// Starts reading `source`; lines arrive on [`Input::lines`].
///
/// # Errors
/// The terminal cannot be set up for the line editor.
pub(crate) fn spawn_input(source: Source, fleet: Fleet) -> Result<Input> {
    let (tx, lines) = mpsc::channel(1);
    let plain = |lines| Ok(Input { lines, printer: Printer::Stdout, done: None });
    match source {
        Source::Script(s) => {
            let _ = tx.try_send(s);
            plain(lines)
        }
        Source::Stdin => {
            // Not on the ctx tracker: a read of stdin cannot be cancelled, and shutdown must
            // not wait for the operator to type something.
            tokio::spawn(async move {
                let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
                while let Ok(Some(line)) = read_line(&mut stdin, MAX_LINE).await {
                    let line = line.unwrap_or_else(|len| {
                        format!("# line of {len} bytes refused (limit {MAX_LINE})")
                    });
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            });
            plain(lines)
        }
        Source::Editor(history) => {
            let mut editor: Editor<Completion, rustyline::history::DefaultHistory> =
                Editor::new().map_err(|e| Error::Console(e.to_string()))?;
            editor.set_helper(Some(Completion { fleet }));
            if let Some(h) = &history {
                let _ = editor.load_history(h);
            }
            let printer =
                editor.create_external_printer().map_err(|e| Error::Console(e.to_string()))?;
            let (done, done_rx) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("control-console".into())
                .spawn(move || edit_loop(editor, history, tx, done_rx))
                .map_err(|e| Error::Console(e.to_string()))?;
            let printer = Printer::Editor(Arc::new(Mutex::new(Box::new(printer))));
            Ok(Input { lines, printer, done: Some(done) })
        }
    }
}

/// Reads one line of at most `max` bytes without buffering more: a longer line is read to
/// its end and discarded, and only its length is returned (`Err`). `None` at end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Result<String, usize>>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        }
        let newline = done > chunk.len();
        r.consume(done);
        if newline {
            break;
        }
    }
    if len > max {
        return Ok(Some(Err(len)));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(Ok(String::from_utf8_lossy(&line).into_owned())))
}

fn edit_loop(
    mut editor: Editor<Completion, rustyline::history::DefaultHistory>,
    history: Option<PathBuf>,
    tx: mpsc::Sender<String>,
    done: std::sync::mpsc::Receiver<bool>,
) {
    loop {
        match editor.readline("control> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if tx.blocking_send(line).is_err() || !done.recv().unwrap_or(false) {
                    break;
                }
            }
            // Ctrl-C clears the line, as in a shell; Ctrl-D leaves.
            Err(ReadlineError::Interrupted) => {}
            Err(_) => break,
        }
    }
    if let Some(h) = history {
        let _ = editor.save_history(&h);
    }
}

/// Completes verbs, `@agent` prefixes and `use <agent>` from the live fleet.
struct Completion {
    fleet: Fleet,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let previous: Vec<&str> = before[..start].split_whitespace().collect();
        let pair = |s: String| Pair { display: s.clone(), replacement: s };
        let names = self.fleet.names();
        let candidates: Vec<Pair> = if let Some(prefix) = word.strip_prefix('@') {
            names
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .map(|n| pair(format!("@{n}")))
                .collect()
        } else if previous.last() == Some(&"use") {
            names
                .into_iter()
                .chain(["all".to_owned()])
                .filter(|n| n.starts_with(word))
                .map(pair)
                .collect()
        } else if previous.is_empty()
            || (previous.len() == 1 && (previous[0] == "all" || previous[0].starts_with('@')))
        {
            VERBS
                .iter()
                .chain(&["all"])
                .filter(|v| v.starts_with(word))
                .map(|v| pair((*v).to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        Ok((start, candidates))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AgentState;

    fn complete(c: &Completion, line: &str) -> Vec<String> {
        let history = rustyline::history::DefaultHistory::new();
        let (_, pairs) = c.complete(line, line.len(), &Context::new(&history)).unwrap();
        pairs.into_iter().map(|p| p.replacement).collect()
    }

    #[tokio::test]
    async fn long_stdin_lines_are_measured_not_buffered() {
        let long = "x".repeat(100);
        let text = format!("ping\r\n{long}\nagents\nlast");
        let mut r = tokio::io::BufReader::with_capacity(8, text.as_bytes());
        let mut got = Vec::new();
        while let Some(l) = read_line(&mut r, 10).await.unwrap() {
            got.push(l);
        }
        let want: Vec<Result<String, usize>> =
            vec![Ok("ping".into()), Err(100), Ok("agents".into()), Ok("last".into())];
        assert_eq!(got, want);
    }

    #[test]
    fn completes_verbs_and_live_agent_names() {
        let fleet = Fleet::new(4);
        let _alpha = fleet.attach("alpha", AgentState::Ready).unwrap();
        let _beta = fleet.attach("beta", AgentState::Ready).unwrap();
        let c = Completion { fleet };
        assert_eq!(complete(&c, "pi"), ["ping"]);
        assert_eq!(complete(&c, "@a"), ["@alpha"]);
        assert_eq!(complete(&c, "@beta st"), ["start", "stop"]);
        assert_eq!(complete(&c, "use "), ["alpha", "beta", "all"]);
        assert!(complete(&c, "calculate 1 ").is_empty(), "no completion inside arguments");
    }
}
