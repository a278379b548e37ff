//! Command-line flags of every tracker role (each also read from a `SWITCHBOARD_*` variable).
use std::net::SocketAddr;
use std::time::Duration;

/// Roles of this service. A role's settings hold no URL of a shared dependency: the bus and
/// the store are named here, connected once by [`crate::run`] and handed to the role's
/// `start_*`, as the demo and the benchmark hand in theirs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// HTTP collector: `POST /track` and `POST /track/batch`; answers 202 once stored durably.
    Collector {
        #[command(flatten)]
        settings: CollectorArgs,
        #[command(flatten)]
        backends: Backends,
    },
    /// Consumes accepted batches, stores raw events and maintains the read model.
    Worker {
        #[command(flatten)]
        settings: WorkerArgs,
        #[command(flatten)]
        backends: Backends,
    },
    /// Reports API (`/api/*`) and the live dashboard (`/`).
    Api {
        #[command(flatten)]
        settings: ApiArgs,
        /// Store holding the read model: `sqlite://path` or `postgres://…`.
        #[arg(long, env = "SWITCHBOARD_STORE", default_value = "sqlite://./data/tracker.db")]
        store: String,
    },
}

/// Where the bus and the store are.
#[derive(Debug, Clone, clap::Args)]
pub struct Backends {
    /// Message bus: `memory://` (embedded: the collector journals into the store) or
    /// `nats://host:port` (JetStream stream `TRACKER_EVENTS`).
    #[arg(long, env = "SWITCHBOARD_BUS", default_value = "memory://")]
    pub bus: String,

    /// Store for raw events and the read model: `sqlite://path` or `postgres://…`.
    #[arg(long, env = "SWITCHBOARD_STORE", default_value = "sqlite://./data/tracker.db")]
    pub store: String,
}

/// The HTTP limits of a tracker listener (collector or API).
#[derive(Debug, Clone, clap::Args)]
pub struct Listener {
    #[command(flatten)]
    pub http: switchboard_core::http::HttpArgs,

    #[command(flatten)]
    pub tls: switchboard_core::tls::TlsArgs,

    /// Open connections at most (lowered, with a warning, to what the process's file limit
    /// leaves); more are closed on accept.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl Listener {
    /// The limits these flags give (the cap kept below the open-file limit).
    pub fn limits(&self, server: &'static str) -> switchboard_core::http::Limits {
        self.http.limits(self.max_connections as usize, server)
    }
}

/// Who may read the reports API, the dashboard and the audit.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiAccess {
    /// Shared secret for the reports API, dashboard and audit: `Authorization: Bearer <token>`,
    /// or `/?token=<token>` once in a browser (then a cookie). Unset: anyone who can reach the
    /// port may read them.
    #[arg(long, env = "SWITCHBOARD_API_TOKEN", hide_env_values = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub api_token: Option<String>,
}

impl ApiAccess {
    /// The token in the form the API state keeps it.
    pub fn token(&self) -> Option<std::sync::Arc<str>> {
        self.api_token.as_deref().map(std::sync::Arc::from)
    }
}

/// `switchboard tracker collector` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {
    /// Address to serve `POST /track` and `POST /track/batch` on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub listener: Listener,

    /// Largest request body in bytes, compressed or not (larger: 413).
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Most events in one batch request (more: 413).
    #[arg(long, env = "SWITCHBOARD_MAX_BATCH_EVENTS", default_value_t = 10_000)]
    pub max_batch_events: usize,

    /// Requests waiting for the journal before new ones are shed with 503.
    #[arg(long, env = "SWITCHBOARD_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Oldest accepted `datetimeStamp`, relative to now (e.g. `7d`). Unset: any past time is
    /// accepted, since Logektor clients backfill history (the contract's own example is `123`).
    #[arg(long, env = "SWITCHBOARD_MAX_EVENT_AGE", value_parser = humantime::parse_duration)]
    pub max_event_age: Option<Duration>,

    /// How far in the future a `datetimeStamp` may be (client clock skew).
    #[arg(long, env = "SWITCHBOARD_MAX_CLOCK_SKEW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,

    /// Also serve the reports API and dashboard on the collector's address.
    #[arg(long, env = "SWITCHBOARD_SERVE_API")]
    pub serve_api: bool,

    /// Embedded mode only (`--bus memory://`): fold accepted events into the read model at
    /// the group commit, in the transaction that stores them, instead of appending them to
    /// the outbox for a worker. One process does it all; an event is in the reports when its
    /// 202 is sent. Leave it off when a separate worker process shares the store.
    #[arg(long, env = "SWITCHBOARD_FOLD")]
    pub fold: bool,

    #[command(flatten)]
    pub access: ApiAccess,
}

/// `switchboard tracker worker` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Most journal entries (collector requests) folded in one transaction.
    #[arg(long, env = "SWITCHBOARD_BATCH_ENTRIES", default_value_t = 256)]
    pub batch_entries: usize,

    /// Durable consumer name; workers with the same name share the stream.
    #[arg(long, env = "SWITCHBOARD_CONSUMER", default_value = "tracker-workers")]
    pub consumer: String,

    /// Unacked stream messages are redelivered after this long (e.g. a worker died).
    #[arg(long, env = "SWITCHBOARD_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// Pause between polls of an empty outbox (embedded mode).
    #[arg(long, env = "SWITCHBOARD_IDLE_POLL", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub idle_poll: Duration,
}

/// `switchboard tracker api` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address to serve the reports API and dashboard on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub listener: Listener,

    #[command(flatten)]
    pub access: ApiAccess,
}

/// `switchboard bench tracker` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events sent per measured phase.
    #[arg(long, env = "SWITCHBOARD_EVENTS", default_value_t = 200_000)]
    pub events: usize,

    /// Events per batch request.
    #[arg(long, env = "SWITCHBOARD_BATCH", default_value_t = 100)]
    pub batch: usize,

    /// Concurrent HTTP clients.
    #[arg(long, env = "SWITCHBOARD_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Also measure distributed mode on this NATS server (use a throw-away one).
    #[arg(long, env = "SWITCHBOARD_BENCH_NATS", requires = "bench_postgres")]
    pub bench_nats: Option<String>,

    /// Also measure distributed mode on this PostgreSQL database (use a throw-away one).
    #[arg(long, env = "SWITCHBOARD_BENCH_POSTGRES", requires = "bench_nats")]
    pub bench_postgres: Option<String>,

    /// Give up on a phase after this long.
    #[arg(long, env = "SWITCHBOARD_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Workers folding in the end-to-end phases, one phase per count (e.g. `1,2,4`: how it
    /// scales); the workers share one durable consumer, as separate worker processes do.
    #[arg(long, env = "SWITCHBOARD_WORKERS", value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Vec<u16>,

    /// Instead of the phases: a steady load for this long (e.g. `10m`) in each mode, with RSS,
    /// store size, journal backlog and folded events sampled every 5 s.
    #[arg(long, env = "SWITCHBOARD_SOAK", value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,

    /// Events per second the soak sends (on a fixed schedule).
    #[arg(long, env = "SWITCHBOARD_SOAK_RATE", default_value_t = 50_000, requires = "soak")]
    pub soak_rate: u64,
}

impl CollectorArgs {
    /// Defaults, on an ephemeral loopback port.
    pub fn ephemeral() -> Self {
        switchboard_core::config::flags(&["--listen", "127.0.0.1:0"])
    }
}

impl WorkerArgs {
    /// Defaults, polling the outbox every `idle_poll`.
    pub fn with_idle_poll(idle_poll: Duration) -> Self {
        let mut w: Self = switchboard_core::config::flags(&[]);
        w.idle_poll = idle_poll;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_parse() {
        let c = CollectorArgs::ephemeral();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.max_batch_events, 10_000);
        let w = WorkerArgs::with_idle_poll(Duration::from_millis(3));
        assert_eq!((w.batch_entries, w.idle_poll), (256, Duration::from_millis(3)));
    }
}
