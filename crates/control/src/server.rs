//! `switchboard control server`: the gRPC listener agents attach to, plus the operator
//! console reading a `--exec` script, piped stdin, or an interactive terminal.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_core::Ctx;

use crate::attach::{self, Gate};
use crate::console::{Console, Flow, Input, Source, spawn_input};
use crate::fleet::Fleet;
use crate::{Error, Result};

/// `switchboard control server` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address agents dial (gRPC).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Shared secret agents must present (prefer the env var: flags show in `ps`).
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub token: String,

    /// Run these `;`-separated commands, then exit (instead of reading stdin).
    #[arg(long, env = "SWITCHBOARD_EXEC")]
    pub exec: Option<String>,

    /// Before running commands, wait until this many agents are attached.
    #[arg(long, env = "SWITCHBOARD_WAIT_AGENTS", default_value_t = 0)]
    pub wait_agents: usize,

    /// How long to wait for --wait-agents before giving up (exit 1).
    #[arg(long, env = "SWITCHBOARD_WAIT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,

    /// Keep serving after the script or stdin ends, until SIGINT/SIGTERM.
    #[arg(long, env = "SWITCHBOARD_STAY")]
    pub stay: bool,

    /// How long a command waits for each agent's first reply.
    #[arg(long, env = "SWITCHBOARD_REPLY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reply_timeout: Duration,

    /// How long `wait` (and the end of a script) waits for running calculations.
    #[arg(long, env = "SWITCHBOARD_FINISH_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub finish_timeout: Duration,

    /// Agents attached at once at most; more are refused.
    #[arg(long, env = "SWITCHBOARD_MAX_AGENTS", default_value_t = 10_000)]
    pub max_agents: usize,

    /// Commands queued per agent; more are refused at the console as busy.
    #[arg(long, env = "SWITCHBOARD_AGENT_QUEUE", default_value_t = 64)]
    pub agent_queue: usize,

    /// Messages per second accepted from one agent; an agent flooding above it is disconnected.
    #[arg(long, env = "SWITCHBOARD_REPLY_RATE", default_value_t = 1000.0)]
    pub reply_rate: f64,

    #[command(flatten)]
    pub tls: crate::tls::ServerTls,

    #[command(flatten)]
    pub grpc: switchboard_core::grpc::GrpcArgs,

    /// History file of the interactive console.
    #[arg(long, env = "SWITCHBOARD_HISTORY")]
    pub history: Option<PathBuf>,
}

impl ServerArgs {
    async fn gate(&self) -> Result<Gate> {
        Ok(Gate {
            tls: crate::tls::server_config(&self.tls).await?,
            token: self.token.clone(),
            max_agents: self.max_agents,
            reply_rate: self.reply_rate,
            idle_timeout: self.grpc.idle_timeout,
        })
    }
}

/// Runs the console server until the input ends (or `quit`), or until shutdown with `--stay`.
///
/// # Errors
/// Bad flags, the listener cannot be bound, or `--wait-agents` is not met in time.
pub async fn run(args: ServerArgs, ctx: Ctx) -> Result<()> {
    if args.token.len() < 16 {
        tracing::warn!("--token is shorter than 16 characters; use a long random secret");
    }
    if args.token.is_empty() {
        return Err(Error::config("--token must not be empty"));
    }
    let fleet = Fleet::new(args.agent_queue);
    fleet.publish_status();
    ctx.health.register("control-server");
    let addr = attach::serve(args.listen, args.gate().await?, fleet.clone(), &ctx).await?;
    ctx.health.set_ready("control-server", true);

    if args.wait_agents > 0 {
        // SIGTERM during the wait is a normal stop, not a failed wait.
        let reached = tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            r = fleet.wait_for(args.wait_agents, args.wait_timeout) => r,
        };
        if !reached {
            return Err(Error::TooFewAgents {
                attached: fleet.len(),
                wanted: args.wait_agents,
                addr,
                waited: args.wait_timeout,
            });
        }
    }
    let source = match (&args.exec, std::io::IsTerminal::is_terminal(&std::io::stdin())) {
        (Some(script), _) => Source::Script(script.clone()),
        (None, true) => Source::Editor(args.history.clone()),
        (None, false) => Source::Stdin,
    };
    let from_stdin = matches!(source, Source::Stdin);
    let input = spawn_input(source, fleet.clone())?;
    let console =
        Console::new(fleet, input.printer.clone(), args.reply_timeout, args.finish_timeout);
    let lines = drive(console, input, &ctx).await;
    if from_stdin && lines == 0 && !ctx.shutdown.is_cancelled() {
        // stdin is not a terminal (a pipe, a file, /dev/null, a service manager): without this
        // line the console would just exit 0, as if it had done something.
        tracing::warn!(
            "stdin ended before any command (it is not a terminal): nothing to run; pipe commands \
             in, pass --exec 'start; ping', or add --stay to keep serving agents"
        );
    }
    if args.stay {
        ctx.shutdown.cancelled().await;
    }
    Ok(())
}

/// Feeds input lines to the console until the input ends, `quit`, or shutdown; then waits
/// for the calculations it started. Returns how many lines were read.
pub(crate) async fn drive(mut console: Console, mut input: Input, ctx: &Ctx) -> usize {
    let mut lines = 0;
    loop {
        let line = tokio::select! {
            () = ctx.shutdown.cancelled() => return lines,
            l = input.lines.recv() => l,
        };
        let Some(line) = line else { break };
        lines += 1;
        let flow = console.run_line(&line).await;
        input.line_done(flow == Flow::Continue);
        if flow == Flow::Quit {
            break;
        }
    }
    tokio::select! {
        () = ctx.shutdown.cancelled() => {}
        () = console.wait() => {}
    }
    lines
}
