//! The `inferencekey-local` binary: parses the command line, starts the local platform, prints the
//! ready line and export lines, and serves until Ctrl+C or SIGTERM (Ctrl+Break on Windows).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use inferencekey_local::pki::LeafKind;
use inferencekey_local::{Config, LocalPlatform, Tls};

const USAGE: &str = "\
usage: inferencekey-local [--port 0] [--host 127.0.0.1] [--allow-remote] [--project local]
                          [--seed N] [--state-dir DIR]
                          [--tls | --tls-cert PATH --tls-key PATH] [--tls-client-ca PATH]
                          [--llama-server PATH] [--engine-slots 1] [--packaged-model NAME=PATH]
                          [--attach SLUG=URL]...

Runs a local copy of the InferenceKey platform API. Prints a JSON ready line and the
INFERENCEKEY_* export lines, then serves until Ctrl+C / SIGTERM (Windows: Ctrl+Break).
Without --seed the tokens are random (kept across restarts with --state-dir); --seed N
makes them derive from N, for reproducible runs.
--tls serves HTTPS with a CA and certificate made at start-up (the ready line's ca_path
names the CA's PEM file); --tls-cert/--tls-key serve given PEM files instead;
--tls-client-ca requires client certificates signed by that CA (mutual TLS);
--tls-test-leaf expired|wrong-host serves a generated leaf clients must refuse (tests).
--llama-server (or INFERENCEKEY_LLAMA_SERVER) runs a real llama-server for each llamacpp
workload whose model is a .gguf path or a --packaged-model name (--engine-slots at once);
--attach SLUG=URL serves workload SLUG from an engine already running at URL (loopback
unless --allow-remote).";

enum Command {
    Serve(Box<Config>),
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut config = Config::default();
    let (mut generate, mut leaf) = (false, LeafKind::Valid);
    let (mut cert, mut key) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--allow-remote" => config.allow_remote = true,
            "--port" => {
                let text = value("--port")?;
                config.port = text.parse().map_err(|_| format!("invalid port {text:?}"))?;
            }
            "--host" => {
                let text = value("--host")?;
                config.host = if text == "localhost" {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    text.parse()
                        .map_err(|_| format!("invalid host {text:?} (an IP address)"))?
                };
            }
            "--project" => config.project = value("--project")?,
            "--seed" => {
                let text = value("--seed")?;
                config.seed = Some(text.parse().map_err(|_| format!("invalid seed {text:?}"))?);
            }
            "--state-dir" => config.state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--tls" => generate = true,
            // Test knobs (README "TLS"): serve a leaf that verifying clients must refuse.
            "--tls-test-leaf" => {
                let text = value("--tls-test-leaf")?;
                leaf = match text.as_str() {
                    "expired" => LeafKind::Expired,
                    "wrong-host" => LeafKind::WrongHost,
                    _ => {
                        return Err(format!(
                            "invalid --tls-test-leaf {text:?} (expired or wrong-host)"
                        ))
                    }
                };
                generate = true;
            }
            "--tls-cert" => cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => key = Some(PathBuf::from(value("--tls-key")?)),
            "--tls-client-ca" => {
                config.tls_client_ca = Some(PathBuf::from(value("--tls-client-ca")?));
            }
            "--llama-server" => {
                config.engines.llama_server = Some(PathBuf::from(value("--llama-server")?));
            }
            "--engine-slots" => {
                let text = value("--engine-slots")?;
                config.engines.slots = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--engine-slots: not a positive integer: {text:?}"))?;
            }
            "--packaged-model" => {
                let text = value("--packaged-model")?;
                let (name, path) = text
                    .split_once('=')
                    .ok_or(format!("--packaged-model takes NAME=PATH, got {text:?}"))?;
                config
                    .engines
                    .packaged_models
                    .insert(name.to_string(), PathBuf::from(path));
            }
            "--attach" => {
                let text = value("--attach")?;
                let (slug, url) = text
                    .split_once('=')
                    .ok_or(format!("--attach takes SLUG=URL, got {text:?}"))?;
                config
                    .engines
                    .attach
                    .insert(slug.trim().to_ascii_lowercase(), url.to_string());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    config.tls = match (generate, cert, key) {
        (false, None, None) => Tls::Off,
        (true, None, None) => Tls::Generate { leaf },
        (false, Some(cert), Some(key)) => Tls::Files { cert, key },
        (true, _, _) => return Err("--tls and --tls-cert/--tls-key exclude each other".into()),
        (false, _, _) => return Err("--tls-cert and --tls-key go together".into()),
    };
    // Attached engines on other hosts need the same consent as serving on them.
    config.engines.allow_remote_attach = config.allow_remote;
    if config.engines.llama_server.is_none() {
        if let Some(path) = std::env::var_os("INFERENCEKEY_LLAMA_SERVER").filter(|p| !p.is_empty())
        {
            config.engines.llama_server = Some(PathBuf::from(path));
        }
    }
    config.engines.validate()?;
    if config.tls_client_ca.is_some() && !config.tls.is_on() {
        return Err("--tls-client-ca needs --tls or --tls-cert and --tls-key".into());
    }
    Ok(Command::Serve(Box::new(config)))
}

/// What `--allow-remote` exposes, said loudly on stderr before the ready line.
fn remote_warning(addr: SocketAddr, seeded: bool) -> String {
    let reach = if addr.ip().is_unspecified() {
        "every network interface of this machine"
    } else if addr.ip().is_loopback() {
        "loopback only, but with the Host check off"
    } else {
        "a network interface of this machine"
    };
    let mut text = format!(
        "\
inferencekey-local: WARNING: --allow-remote: listening on {addr} ({reach}).
inferencekey-local: WARNING: whoever reaches this port can use everything it serves, with no
inferencekey-local: WARNING: Host check (so web pages can reach it by DNS rebinding too):
inferencekey-local: WARNING:   - the admin API under /_local/: GET /_local/info hands out every token,
inferencekey-local: WARNING:     and it mints tokens, resets state, injects faults, reads the journal;
inferencekey-local: WARNING:   - the control plane (workloads) and the data plane (chat, embeddings, rerank).
inferencekey-local: WARNING: Only the tokens stand in the way. Use it on a trusted network only.
"
    );
    if seeded {
        text.push_str(
            "inferencekey-local: WARNING: --seed makes the tokens predictable to anyone who knows the seed.\n",
        );
    }
    text
}

/// Ctrl+C and the platform's other "please stop" signals, listened for from creation on: built
/// before the ready line is printed, so a signal sent as soon as the line is read is handled,
/// never fatal.
struct Signals {
    runtime: tokio::runtime::Runtime,
    listeners: Listeners,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listeners = {
            let _entered = runtime.enter();
            Listeners::new()?
        };
        Ok(Self { runtime, listeners })
    }

    /// Waits for the first of the signals.
    fn wait(self) -> std::io::Result<()> {
        let Self {
            runtime,
            mut listeners,
        } = self;
        runtime.block_on(listeners.first())
    }
}

/// Unix: Ctrl+C (SIGINT) and SIGTERM.
#[cfg(unix)]
struct Listeners {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Listeners {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn first(&mut self) -> std::io::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        Ok(())
    }
}

/// Windows, where nothing sends SIGTERM: Ctrl+C, Ctrl+Break (what a parent sends a console process
/// group with `CTRL_BREAK_EVENT`) and the console window closing.
#[cfg(windows)]
struct Listeners {
    interrupt: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
}

#[cfg(windows)]
impl Listeners {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        Ok(Self {
            interrupt: ctrl_c()?,
            ctrl_break: ctrl_break()?,
            close: ctrl_close()?,
        })
    }

    async fn first(&mut self) -> std::io::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.ctrl_break.recv() => {}
            _ = self.close.recv() => {}
        }
        Ok(())
    }
}

/// Elsewhere: Ctrl+C, registered when the wait starts.
#[cfg(not(any(unix, windows)))]
struct Listeners;

#[cfg(not(any(unix, windows)))]
impl Listeners {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn first(&mut self) -> std::io::Result<()> {
        tokio::signal::ctrl_c().await
    }
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(config)) => *config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("inferencekey-local {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("inferencekey-local: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("inferencekey-local: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (allow_remote, seeded) = (config.allow_remote, config.seed.is_some());
    let platform = match LocalPlatform::start(config) {
        Ok(platform) => platform,
        Err(error) => {
            eprintln!("inferencekey-local: {error}");
            return ExitCode::FAILURE;
        }
    };
    if allow_remote {
        eprint!("{}", remote_warning(platform.local_addr(), seeded));
    }
    let mut stdout = std::io::stdout().lock();
    // Whoever started us reads this line to learn the URL and tokens: flush it at once.
    if write!(stdout, "{}", platform.info().ready_text())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        eprintln!("inferencekey-local: cannot write the ready line to stdout");
        return ExitCode::FAILURE;
    }
    drop(stdout);
    let waited = signals.wait();
    platform.stop();
    match waited {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inferencekey-local: cannot wait for signals: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn remote_warning_says_what_is_exposed() {
        let wildcard = remote_warning("0.0.0.0:4000".parse().unwrap(), false);
        assert!(wildcard.contains("listening on 0.0.0.0:4000 (every network interface"));
        for needed in [
            "admin API",
            "/_local/",
            "control plane",
            "data plane",
            "DNS rebinding",
        ] {
            assert!(wildcard.contains(needed), "{needed}");
        }
        assert!(wildcard
            .lines()
            .all(|line| line.starts_with("inferencekey-local: WARNING:")));
        assert!(!wildcard.contains("--seed"));
        let loopback = remote_warning("127.0.0.1:4000".parse().unwrap(), true);
        assert!(loopback.contains("Host check off") && loopback.contains("--seed makes"));
    }

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let Ok(Command::Serve(config)) = parse(&[
            "--port",
            "8080",
            "--host=::1",
            "--allow-remote",
            "--project",
            "acme",
            "--seed=7",
            "--state-dir",
            "/tmp/x",
        ]) else {
            panic!("expected serve");
        };
        assert_eq!(config.port, 8080);
        assert_eq!(config.host, "::1".parse::<IpAddr>().unwrap());
        assert!(config.allow_remote);
        assert_eq!((config.project.as_str(), config.seed), ("acme", Some(7)));
        assert_eq!(config.state_dir, Some(PathBuf::from("/tmp/x")));
        let Ok(Command::Serve(defaults)) = parse(&[]) else {
            panic!("expected serve");
        };
        assert_eq!(defaults.seed, None);
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "x"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert_eq!(defaults.tls, Tls::Off);
        assert_eq!(defaults.tls_client_ca, None);
    }

    #[test]
    fn tls_flags() {
        let serve = |args: &[&str]| match parse(args) {
            Ok(Command::Serve(config)) => *config,
            Ok(_) => panic!("expected serve"),
            Err(message) => panic!("{message}"),
        };
        assert_eq!(serve(&["--tls"]).tls, Tls::generate());
        let config = serve(&["--tls", "--tls-client-ca", "/c/ca.pem"]);
        assert_eq!(config.tls_client_ca, Some(PathBuf::from("/c/ca.pem")));
        assert_eq!(
            serve(&["--tls-test-leaf=expired"]).tls,
            Tls::Generate {
                leaf: LeafKind::Expired
            }
        );
        assert_eq!(
            serve(&["--tls", "--tls-test-leaf", "wrong-host"]).tls,
            Tls::Generate {
                leaf: LeafKind::WrongHost
            }
        );
        assert_eq!(
            serve(&["--tls-cert", "c.pem", "--tls-key=k.pem"]).tls,
            Tls::Files {
                cert: PathBuf::from("c.pem"),
                key: PathBuf::from("k.pem")
            }
        );
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &["--tls-client-ca", "ca.pem"],
            &["--tls-test-leaf", "stale"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
