//! `LocalPlatform`: runs the server on its own tokio runtime on a background thread, returns once
//! it listens, and shuts it down on `stop()` or drop. No global state: instances are independent.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app::App;
use crate::config::{Config, ReadyInfo};
use crate::error::LocalError;
use crate::server;
use crate::slug::canonical_slug;
use crate::state::StateLock;
use crate::tls;

/// Worker threads of each platform's runtime (the platform is I/O-bound and small).
const WORKER_THREADS: usize = 2;
/// On stop, in-flight tasks are cancelled; this only bounds the wait for blocking work.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// A running local platform.
#[derive(Debug)]
pub struct LocalPlatform {
    info: ReadyInfo,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

type Started = Result<(ReadyInfo, SocketAddr, oneshot::Sender<()>), LocalError>;

impl LocalPlatform {
    /// Starts the platform on a background thread and returns once it is listening.
    pub fn start(config: Config) -> Result<Self, LocalError> {
        if !config.host.is_loopback() && !config.allow_remote {
            return Err(LocalError::RemoteNotAllowed(config.host));
        }
        let project = canonical_slug(&config.project);
        if project.is_empty() {
            return Err(LocalError::InvalidProject(config.project));
        }
        let config = Config { project, ..config };
        let (ready_tx, ready_rx) = mpsc::channel::<Started>();
        let thread = std::thread::Builder::new()
            .name("inferencekey-local".to_string())
            .spawn(move || run(config, ready_tx))
            .map_err(LocalError::Runtime)?;
        match ready_rx.recv() {
            Ok(Ok((info, addr, stop))) => Ok(Self {
                info,
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(LocalError::Startup)
            }
        }
    }

    /// What clients need: URL, project, tokens.
    pub fn info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The address the platform listens on (`0.0.0.0:41234` for a wildcard host, where `info().url`
    /// says `127.0.0.1`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread (also done on drop).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the local platform thread panicked");
            }
        }
    }
}

impl Drop for LocalPlatform {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Most connections waiting to be accepted, as real engines' servers allow (uvicorn's 2,048, Go's and llama.cpp's
/// the system's `somaxconn`, 4,096 by default): a client that opens a thousand streams at once is accepted, not
/// left to retry its handshakes a second later (tokio's `bind` allows 1,024).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with the engines' backlog (the kernel caps it at `somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted platform can take its port back at once.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The server thread: lock the state directory, build a runtime, bind, report, serve until
/// stopped, shut down, unlock.
fn run(config: Config, ready: mpsc::Sender<Started>) {
    // Held until every task that could write the state file is gone (the runtime is shut down).
    let lock = match config
        .state_dir
        .as_deref()
        .map(StateLock::acquire)
        .transpose()
    {
        Ok(lock) => lock,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("inferencekey-local-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(LocalError::Runtime(error)));
            return;
        }
    };
    let setup = runtime.block_on(async {
        let addr = SocketAddr::new(config.host, config.port);
        let listener = listen(addr).map_err(|source| LocalError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| LocalError::Bind { addr, source })?;
        if let Err(message) = config.engines.validate() {
            return Err(LocalError::Engines(message));
        }
        let mut app = App::new(&config, local)?;
        let served = tls::setup(&config, local.ip())?;
        if let Some(served) = &served {
            let ca_path = served
                .ca_path
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned());
            app.info = app.info.clone().https(ca_path);
        }
        Ok::<_, LocalError>((listener, local, Arc::new(app), served))
    });
    // Keeps the generated CA's temporary directory (if any) until the server is gone.
    let mut temp_dir = None;
    match setup {
        Ok((listener, local, app, served)) => {
            let acceptor = served.map(|served| {
                temp_dir = served.temp_dir;
                served.acceptor
            });
            let (stop_tx, stop_rx) = oneshot::channel();
            // Engines a killed platform left behind go first; then those the workloads want.
            runtime.block_on(async {
                app.engines.reap_orphans().await;
                app.engines.reconcile(&app).await;
            });
            if ready.send(Ok((app.info.clone(), local, stop_tx))).is_ok() {
                let router = server::router(app.clone());
                runtime.block_on(server::serve(
                    listener,
                    app.clone(),
                    router,
                    acceptor,
                    stop_rx,
                ));
            }
            // No engine outlives its platform.
            runtime.block_on(app.engines.stop_all());
        }
        Err(error) => {
            let _ = ready.send(Err(error));
        }
    }
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    drop(temp_dir);
    drop(lock);
}
