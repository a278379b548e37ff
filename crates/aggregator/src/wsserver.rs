//! `switchboard sim wsserver`: a websocket server that feeds an aggregator and checks it.
//!
//! It plays a deployed server: association lists on connect and on a cadence, messages at a
//! configured rate (some naming unannounced children), optional whitespace padding, the
//! `children` key, malformed and oversized frames, and simulated restarts (close 1012). It
//! records what it sent in a [`Ledger`] and checks every report it receives, printing each
//! mismatch. One task owns the ledger and the current connection, so there are no locks;
//! a newer connection replaces the older one.
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use switchboard_core::window::Windows;
use switchboard_core::{Clock, Ctx, SystemClock};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::ledger::{Ledger, Verdict};
use crate::{Error, Result};

pub(crate) mod world;

use world::{Shape, World};

type Ws = WebSocketStream<TcpStream>;

/// Messages are sent in small batches on this tick.
const TICK: Duration = Duration::from_millis(10);

/// Payload of the Ping sent behind the full association list.
const LIST_READ: &[u8] = b"list-read";

/// `switchboard sim wsserver` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WsServerArgs {
    /// Address to listen on (any path is accepted, e.g. ws://127.0.0.1:5050/ws).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Number of parent services.
    #[arg(long, env = "SWITCHBOARD_PARENTS", default_value_t = 4)]
    pub parents: usize,
    /// Children per parent at start.
    #[arg(long, env = "SWITCHBOARD_CHILDREN_PER_PARENT", default_value_t = 5)]
    pub children_per_parent: usize,
    /// Messages per second.
    #[arg(long, env = "SWITCHBOARD_RATE", default_value_t = 200)]
    pub rate: u64,
    /// Cadence of association updates (move a child, announce a late child).
    #[arg(long, env = "SWITCHBOARD_UPDATE_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub update_every: Duration,
    /// Share of messages naming a child that is never announced.
    #[arg(long, env = "SWITCHBOARD_UNKNOWN_RATIO", default_value_t = 0.01)]
    pub unknown_ratio: f64,
    /// Pad some frames with spaces, tabs and newlines.
    #[arg(long, env = "SWITCHBOARD_PAD")]
    pub pad: bool,
    /// Use the `children` key instead of `child` in every other association entry.
    #[arg(long, env = "SWITCHBOARD_CHILDREN_KEY")]
    pub children_key: bool,
    /// Send a malformed frame after every N messages (0: never).
    #[arg(long, env = "SWITCHBOARD_MALFORMED_EVERY", default_value_t = 0)]
    pub malformed_every: u64,
    /// Send an oversized frame after every N messages (0: never).
    #[arg(long, env = "SWITCHBOARD_OVERSIZED_EVERY", default_value_t = 0)]
    pub oversized_every: u64,
    /// Size of oversized frames, in bytes (above the client's --max-frame-bytes).
    #[arg(long, env = "SWITCHBOARD_OVERSIZED_BYTES", default_value_t = 2 << 20)]
    pub oversized_bytes: usize,
    /// Simulate a server restart (close 1012) this often; never inside the guard band.
    #[arg(long, env = "SWITCHBOARD_DROP_EVERY", value_parser = humantime::parse_duration)]
    pub drop_every: Option<Duration>,
    /// Window length; must equal the aggregator's --interval.
    #[arg(long, env = "SWITCHBOARD_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Send nothing this close to a window boundary, so both sides agree on each window.
    #[arg(long, env = "SWITCHBOARD_GUARD", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub guard: Duration,
    /// Stop after this many reports were checked; fail if any mismatched (0: run until stopped).
    #[arg(long, env = "SWITCHBOARD_EXPECT_REPORTS", default_value_t = 0)]
    pub expect_reports: u64,
    /// Stop sending messages after this many (0: no limit).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES", default_value_t = 0)]
    pub max_messages: u64,
    /// Do not check the first window (after a server restart the client's first report may
    /// include messages from the previous server).
    #[arg(long, env = "SWITCHBOARD_SKIP_FIRST_WINDOW")]
    pub skip_first_window: bool,
    /// Print every report that matched as a table (parent → parent: calls).
    #[arg(long, env = "SWITCHBOARD_PRINT_REPORTS")]
    pub print_reports: bool,
    /// Seed of the random tree and traffic.
    #[arg(long, env = "SWITCHBOARD_SEED", default_value_t = 1)]
    pub seed: u64,
}

impl WsServerArgs {
    /// The demo's simulator: every feature on, ephemeral port, `interval` windows, every
    /// checked report printed.
    pub(crate) fn demo(interval: Duration) -> Self {
        let interval = humantime::format_duration(interval).to_string();
        switchboard_core::config::flags(&[
            "--listen",
            "127.0.0.1:0",
            "--interval",
            &interval,
            "--print-reports",
            "--pad",
            "--children-key",
            "--malformed-every",
            "5000",
        ])
    }

    fn shape(&self) -> Shape {
        Shape {
            parents: self.parents,
            children_per_parent: self.children_per_parent,
            unknown_ratio: self.unknown_ratio,
            pad: self.pad,
            children_key: self.children_key,
            seed: self.seed,
        }
    }
}

/// Binds the listener; returns it with the bound address.
pub(crate) async fn bind(args: &WsServerArgs) -> Result<(TcpListener, SocketAddr)> {
    let addr = args.listen;
    let listener =
        switchboard_core::admin::listen(addr).map_err(|source| Error::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Runs the simulator until `ctx.shutdown` or until the expected reports were checked.
pub(crate) async fn run(args: WsServerArgs, ctx: Ctx) -> Result<()> {
    if args.interval <= args.guard * 2 {
        return Err(Error::config("--interval must be longer than twice --guard"));
    }
    let (listener, addr) = bind(&args).await?;
    tracing::info!(url = %format!("ws://{addr}/ws"), "wsserver listening");
    ctx.health.set_ready("wsserver", true);
    let result = serve(listener, args, ctx.child()).await;
    ctx.health.set_ready("wsserver", false);
    result
}

/// Accepts connections on `listener` and feeds the newest one.
pub(crate) async fn serve(listener: TcpListener, args: WsServerArgs, ctx: Ctx) -> Result<()> {
    let (tx, rx) = mpsc::channel(4);
    let accept_ctx = ctx.clone();
    ctx.spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = accept_ctx.shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %switchboard_core::describe_error(&e), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let tx = tx.clone();
            accept_ctx.spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_tungstenite::accept_async(tcp),
                )
                .await
                {
                    Ok(Ok(ws)) => {
                        if tx.try_send(ws).is_err() {
                            metrics::counter!("wsserver_connections_shed_total").increment(1);
                            tracing::warn!(%peer, "too many connections waiting; closing this one");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %switchboard_core::describe_error(&e), "websocket handshake failed"),
                    Err(_) => tracing::warn!(%peer, "websocket handshake timed out"),
                }
            });
        }
    });
    Feeder::new(args).run(rx, ctx).await
}

/// The single task that owns the ledger and the current connection.
struct Feeder {
    args: WsServerArgs,
    windows: Windows,
    world: World,
    ledger: Ledger,
    conn: Option<Ws>,
    /// The full association list went out with a Ping behind it and its Pong is not back yet:
    /// the client is still reading the list, so nothing else is sent (a million-child list
    /// takes a while to parse, and messages sent meanwhile would be counted windows late).
    reading_list: bool,
    sent: u64,
    checked: u64,
    mismatches: u64,
    unattributed: u64,
}

impl Feeder {
    fn new(args: WsServerArgs) -> Self {
        let windows = Windows::new(args.interval);
        Self {
            world: World::new(args.shape()),
            ledger: Ledger::new(windows, args.skip_first_window),
            windows,
            args,
            conn: None,
            reading_list: false,
            sent: 0,
            checked: 0,
            mismatches: 0,
            unattributed: 0,
        }
    }

    async fn run(mut self, mut conns: mpsc::Receiver<Ws>, ctx: Ctx) -> Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut update = tokio::time::interval_at(
            Instant::now() + self.args.update_every,
            self.args.update_every,
        );
        let drop_every = self.args.drop_every.unwrap_or(Duration::from_secs(86_400 * 365));
        let mut restart = tokio::time::interval_at(Instant::now() + drop_every, drop_every);
        let mut last = Instant::now();
        let mut credit = 0.0f64;
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                Some(ws) = conns.recv() => self.on_connect(ws).await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    credit += self.args.rate as f64 * (now - last).as_secs_f64();
                    last = now;
                    if self.quiet() {
                        credit = 0.0;
                    } else {
                        // Whole messages only; the fraction stays as credit.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let n = credit as u64;
                        credit -= n as f64;
                        self.send_messages(n).await;
                    }
                }
                _ = update.tick() => if !self.quiet() {
                    let pairs = self.world.update();
                    self.send_associations(&pairs).await;
                },
                _ = restart.tick() => if !self.quiet() && let Some(mut ws) = self.conn.take() {
                    tracing::info!("simulating a server restart (close 1012)");
                    let frame = CloseFrame { code: CloseCode::Restart, reason: "simulated restart".into() };
                    tokio::spawn(async move {
                        let _ = ws.close(Some(frame)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
                    });
                },
                msg = next_frame(&mut self.conn) => self.on_frame(msg),
            }
            if self.args.expect_reports > 0
                && self.checked + self.mismatches >= self.args.expect_reports
            {
                break;
            }
        }
        if let Some(mut ws) = self.conn.take() {
            let _ = ws.close(None).await;
        }
        println!(
            "wsserver: checked={} mismatches={} unattributed={} sent_messages={}",
            self.checked, self.mismatches, self.unattributed, self.sent
        );
        if self.mismatches > 0 {
            return Err(Error::Mismatch {
                checked: self.checked + self.mismatches,
                mismatches: self.mismatches,
            });
        }
        Ok(())
    }

    /// Disconnected, or too close to a window boundary to send anything.
    fn quiet(&self) -> bool {
        let now = SystemClock.now_ms();
        let guard = i64::try_from(self.args.guard.as_millis()).unwrap_or(i64::MAX);
        self.conn.is_none()
            || self.reading_list
            || now - self.windows.start_of(now) < guard
            || self.windows.next_start(now) - now <= guard
    }

    async fn on_connect(&mut self, ws: Ws) {
        if let Some(mut old) = self.conn.replace(ws) {
            tokio::spawn(async move { old.close(None).await });
        }
        tracing::info!("client connected; sending the full association list");
        let pairs = self.world.full_list();
        self.send_associations(&pairs).await;
        // Answered by the client's websocket layer once it has read (and applied) the list.
        self.reading_list = true;
        self.send(vec![Message::Ping(LIST_READ.into())]).await;
    }

    async fn send_associations(&mut self, pairs: &[(uuid::Uuid, uuid::Uuid)]) {
        let frame = self.world.association_frame(pairs);
        let now = SystemClock.now_ms();
        for &(p, c) in pairs {
            self.ledger.announce(p, c, now);
        }
        self.send(vec![Message::text(frame)]).await;
    }

    async fn send_messages(&mut self, n: u64) {
        let mut frames = Vec::new();
        let now = SystemClock.now_ms();
        for _ in 0..n {
            if self.args.max_messages > 0 && self.sent >= self.args.max_messages {
                break;
            }
            let (s, d) = self.world.pick_message();
            frames.push(Message::text(self.world.message_frame(s, d)));
            self.ledger.message(s, d, now);
            self.sent += 1;
            if self.args.malformed_every > 0 && self.sent.is_multiple_of(self.args.malformed_every)
            {
                frames.push(Message::text(self.world.malformed_frame()));
                frames.push(Message::binary(vec![0xff, 0x00]));
            }
            if self.args.oversized_every > 0 && self.sent.is_multiple_of(self.args.oversized_every)
            {
                // A valid message padded past the client's frame limit.
                let (s, d) = self.world.pick_message();
                let body = self.world.message_frame(s, d);
                let pad = self.args.oversized_bytes.saturating_sub(body.len());
                frames.push(Message::text(format!("{body}{}", " ".repeat(pad))));
            }
        }
        metrics::counter!("wsserver_messages_sent_total").increment(frames.len() as u64);
        self.send(frames).await;
    }

    async fn send(&mut self, frames: Vec<Message>) {
        let Some(ws) = self.conn.as_mut() else { return };
        let mut res = Ok(());
        for f in frames {
            res = ws.feed(f).await;
            if res.is_err() {
                break;
            }
        }
        if let Err(e) = res.and(ws.flush().await) {
            tracing::warn!(error = %switchboard_core::describe_error(&e), "send failed; dropping the connection");
            self.conn = None;
        }
    }

    fn on_frame(&mut self, msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) {
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Pong(p))) if p.as_ref() == LIST_READ => {
                tracing::info!("client has read the association list; sending messages");
                self.reading_list = false;
                // The ledger's first window is the one messages start in (a window boundary
                // within the guard band counts as passed): windows the client closed while it
                // was busy reading are not ground truth, and it may fold them into one report.
                let guard = i64::try_from(self.args.guard.as_millis()).unwrap_or(i64::MAX);
                let now = SystemClock.now_ms().saturating_add(guard);
                self.ledger.start(now);
                return;
            }
            Some(Ok(_)) => return,
            Some(Err(e)) => {
                tracing::info!(error = %switchboard_core::describe_error(&e), "client connection failed");
                self.conn = None;
                return;
            }
            None => {
                tracing::info!("client disconnected");
                self.conn = None;
                return;
            }
        };
        let (verdict, window) = match self.ledger.check(text.as_str(), SystemClock.now_ms()) {
            Verdict::Match(window) => {
                self.checked += 1;
                metrics::counter!("wsserver_reports_total", "verdict" => "match").increment(1);
                tracing::info!(window, "report matches the ground truth");
                if self.args.print_reports {
                    print_report(window, self.args.interval, text.as_str());
                }
                ("match", Some(window))
            }
            Verdict::Mismatch { window, expected, got } => {
                self.mismatches += 1;
                metrics::counter!("wsserver_reports_total", "verdict" => "mismatch").increment(1);
                println!("MISMATCH window {window}: expected {expected:?}, got {got:?}");
                tracing::error!(window, ?expected, ?got, "report differs from the ground truth");
                ("mismatch", Some(window))
            }
            Verdict::Unattributed => {
                self.unattributed += 1;
                metrics::counter!("wsserver_reports_total", "verdict" => "unattributed")
                    .increment(1);
                tracing::info!(report = %text.as_str(), "report for a window this server did not see whole");
                ("unattributed", None)
            }
            Verdict::Invalid(e) => {
                self.mismatches += 1;
                metrics::counter!("wsserver_reports_total", "verdict" => "invalid").increment(1);
                println!("INVALID report: {e}: {}", text.as_str());
                tracing::error!(error = %e, "invalid report");
                ("invalid", None)
            }
        };
        let tally = [self.checked, self.mismatches, self.unattributed];
        crate::status::report_checked(verdict, window, tally);
    }
}

/// A checked report as a table; parents are shown by the first 8 hex digits of their id.
fn print_report(window: i64, interval: Duration, text: &str) {
    let Ok(counts) = crate::ledger::counts_of(text) else { return };
    let start = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(window).unwrap_or(0));
    let calls: u64 = counts.values().sum();
    println!(
        "aggregator report, {interval:?} window from {}: {calls} calls, checked \u{2713} (equal to what the simulator sent)",
        humantime::format_rfc3339_seconds(start)
    );
    for ((source, destination), n) in &counts {
        let short = |id: &uuid::Uuid| id.simple().to_string()[..8].to_owned();
        println!("  {} \u{2192} {}  {n:>7}", short(source), short(destination));
    }
}

async fn next_frame(
    conn: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match conn {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}
