//! A round-robin TCP front for several proxy nodes, as a load balancer puts one public address
//! in front of them: each accepted connection is piped to the next backend that accepts it (a
//! dead one is skipped, as a health-checking balancer would). The benchmark and the tests put
//! it in front of proxy processes; it is not a production balancer.
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running front; dropping it stops accepting and cuts the open pipes.
pub struct RoundRobin {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    pipes: TaskTracker,
}

impl RoundRobin {
    /// Serves `listener` (bound by the caller, whose nodes may need its address before they
    /// start), piping each connection to the next of `backends`.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn serve(listener: TcpListener, backends: Vec<SocketAddr>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, pipes) = (CancellationToken::new(), TaskTracker::new());
        tokio::spawn(accept(listener, backends, stop.clone(), pipes.clone()));
        Ok(Self { addr, stop, pipes })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, cuts the open pipes and waits until they have ended.
    pub async fn stop(self) {
        self.stop.cancel();
        self.pipes.close();
        self.pipes.wait().await;
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    backends: Vec<SocketAddr>,
    stop: CancellationToken,
    pipes: TaskTracker,
) {
    let mut next = 0usize;
    loop {
        let mut client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let mut picked = None;
        for _ in 0..backends.len() {
            let backend = backends[next % backends.len()];
            next = next.wrapping_add(1);
            if let Ok(stream) = TcpStream::connect(backend).await {
                picked = Some(stream);
                break;
            }
        }
        // No backend alive: dropping the client closes it, as a balancer with none healthy.
        let Some(mut backend) = picked else { continue };
        let stop = stop.clone();
        pipes.spawn(async move {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}
