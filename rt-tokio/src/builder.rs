//! Starting a node on tokio, and stopping it.

use std::sync::Arc;
use std::time::Duration;

use herdcache_runtime::front::WakeDriver;
use herdcache_runtime::{CLOSE_GRACE, Control, Handle, Runtime, Setup, StartError, Starting};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::driver::{Driver, DriverConfig, Signals};

/// The entry point: `Node::builder()` sets up a cluster member.
pub type Node = herdcache_runtime::Node<Tokio>;

/// Sets a node up (the builder every herdcache runtime shares); `start().await` starts it on
/// the current tokio runtime.
pub type Builder = herdcache_runtime::Builder<Tokio>;

/// The tokio runtime, as the [`Builder`] names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Started = Starting;

    /// Binds the listener and spawns the driver task on the current tokio runtime.
    fn start(self, setup: Setup) -> Starting {
        Box::pin(async move {
            let listener =
                TcpListener::bind(setup.listen_addr()).await.map_err(StartError::Bind)?;
            let local_addr = listener.local_addr().map_err(StartError::Bind)?;
            let wake = Arc::new(Notify::new());
            let wake_driver: WakeDriver = {
                let wake = Arc::clone(&wake);
                Arc::new(move || wake.notify_one())
            };
            let node = setup.assemble(local_addr, wake_driver)?;
            let signals = Arc::new(Signals { wake, stop_now: Notify::new() });
            let config = DriverConfig {
                connect_timeout: node.connect_timeout,
                idle_timeout: node.idle_timeout,
                send_limits: node.send_limits,
            };
            let driver =
                Driver::new(Arc::clone(&node.shared), Arc::clone(&signals), listener, config);
            let task = tokio::spawn(driver.run());
            tracing::info!(node = node.shared.node_id(), %local_addr, "node started");
            let runtime = tokio::runtime::Handle::current();
            let control = Box::new(TokioControl { task, signals, runtime });
            Ok(Handle::new(node.shared, control, node.stop_timeout))
        })
    }
}

/// Ends the driver task.
struct TokioControl {
    task: JoinHandle<()>,
    signals: Arc<Signals>,
    /// The runtime the driver runs on, whose timers a blocking stop waits on.
    runtime: tokio::runtime::Handle,
}

impl Control for TokioControl {
    fn stop(
        self: Box<Self>,
        timeout: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let TokioControl { mut task, signals, .. } = *self;
        Box::pin(async move {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                tracing::warn!("not drained in time: closing");
                signals.stop_now.notify_one();
                if tokio::time::timeout(CLOSE_GRACE * 2, &mut task).await.is_err() {
                    task.abort();
                }
            }
        })
    }

    /// From a thread outside the runtime (a blocking facade's caller).
    fn stop_blocking(self: Box<Self>, timeout: Duration) {
        let runtime = self.runtime.clone();
        runtime.block_on(self.stop(timeout));
    }

    fn kill(self: Box<Self>) {
        self.task.abort();
    }
}
