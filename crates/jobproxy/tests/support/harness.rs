//! Shared by the integration tests: start the simulator from command-line flags, exactly as
//! `switchboard sim jobserver` would parse them.
use clap::Parser;
use switchboard_core::Ctx;
use switchboard_jobproxy::{JobServer, JobServerArgs};

#[derive(Parser)]
struct SimCli {
    #[command(flatten)]
    args: JobServerArgs,
}

/// A simulator on a free loopback port, configured by `flags`.
pub async fn sim(ctx: &Ctx, flags: &[&str]) -> JobServer {
    let argv = ["sim", "--listen", "127.0.0.1:0"].iter().chain(flags);
    JobServer::start(SimCli::parse_from(argv).args, ctx).await.unwrap()
}
