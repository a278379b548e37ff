//! The control part of `switchboard demo`: a console on a free loopback port, two agents
//! attached to it, and — when stdin is a terminal — the console reading commands from it.
use std::io::IsTerminal as _;
use std::time::Duration;

use switchboard_core::{Ctx, Endpoint};

use crate::agent::{self, AgentArgs};
use crate::attach::{self, Gate};
use crate::console::{Console, Source, spawn_input};
use crate::fleet::Fleet;
use crate::{Result, server};

/// Names of the demo agents.
const AGENTS: [&str; 2] = ["agent-1", "agent-2"];

/// Starts the demo set; every task stops on `ctx.shutdown`.
pub(crate) async fn start(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    // A fresh secret per run: the demo is loopback-only, but it shows the real setup.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let fleet = Fleet::new(64);
    fleet.publish_status();
    let gate = Gate {
        token: token.clone(),
        max_agents: 100,
        reply_rate: 1000.0,
        tls: None,
        idle_timeout: switchboard_core::http::DEFAULT_HEADER_TIMEOUT,
    };
    let addr = attach::serve(([127, 0, 0, 1], 0).into(), gate, fleet.clone(), ctx).await?;
    let url = format!("http://{addr}");
    for name in AGENTS {
        let args = AgentArgs::local(&url, name, &token);
        let agent_ctx = ctx.clone();
        ctx.spawn(async move {
            if let Err(e) = agent::run(args, agent_ctx).await {
                tracing::error!(agent = name, error = %switchboard_core::describe_error(&e), "demo agent stopped");
            }
        });
    }
    let mut endpoints = vec![
        Endpoint::new("control", "console gRPC (agents attach here)", url.clone()),
        Endpoint::new(
            "control",
            "attach one more agent",
            format!("SWITCHBOARD_TOKEN={token} switchboard control agent --server {url}"),
        ),
    ];
    if std::io::stdin().is_terminal() {
        let input = spawn_input(Source::Stdin, fleet.clone())?;
        let out = input.printer.clone();
        let console = Console::new(fleet, out, Duration::from_secs(5), Duration::from_secs(60));
        let console_ctx = ctx.clone();
        ctx.spawn(async move {
            server::drive(console, input, &console_ctx).await;
        });
        endpoints.push(Endpoint::new(
            "control",
            "console: type commands here",
            "e.g. `all start; all ping; @agent-1 calculate 2 \"hi\"; agents; help`",
        ));
    }
    Ok(endpoints)
}
