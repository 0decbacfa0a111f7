//! Blocking HTTP/1.1 for the requests a caller's thread waits on (the binding's sync API: unary calls, and the
//! streams it opens and reads), over plain keep-alive sockets of a pool shared by all threads: a request is one
//! `write` and, usually, one `read`, made by the waiting thread itself, with no runtime, reactor or task in between.
//! Used only where it is the same request the async pool would send: `http://` with no proxy, inside a
//! [`blocking_scope`]. Everything else (TLS, proxies, the async API) goes through the reqwest pool.
//!
//! A response is opened (`Direct::open`: the request sent, the answer's head read) and its `Body` then read whole
//! or piece by piece (a stream, as its reader asks for more); a body read to its end gives its connection back to the
//! pool.
//!
//! A blocked write or read wakes every [`INTERRUPT_TICK`] (the sockets' send and receive timeouts) to ask the
//! scope's `interrupted` whether to stop (Ctrl+C); stopping drops the connection, which closes it. The read timeout
//! is the longest silence of one write or read, as on the async path.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How often a blocked connect, write, read or retry wait asks whether the caller was interrupted.
pub const INTERRUPT_TICK: Duration = Duration::from_millis(100);

/// Most idle connections kept per client: as many as a burst of concurrent requests opened (a thousand streams at
/// once on one event loop), so the next burst finds them warm, as the pool does; each closes after its idle limit.
const MAX_IDLE: usize = 1024;

/// Most response headers read (the platform sends about ten).
const MAX_HEADERS: usize = 64;

/// Read size while the length of what comes is unknown.
const READ_CHUNK: usize = 16 * 1024;

/// Room for one read of a body read piece by piece (a stream): a fast stream's events arrive many to a read.
const PIECE_READ: usize = 64 * 1024;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 64 * 1024;

/// How the direct requests of a scope wait for the network.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The thread blocks in each connect, write and read, asking `interrupted` every tick.
    Block(fn() -> bool),
    /// Nothing blocks: a wait suspends the request (its future returns pending) with the [`Want`] its caller's
    /// event loop waits for before polling it again.
    Loop,
}

impl Mode {
    /// Whether sockets read in this mode are non-blocking (a loop scope's).
    fn nonblocking(self) -> bool {
        matches!(self, Mode::Loop)
    }
}

thread_local! {
    static SCOPE: Cell<Option<Mode>> = const { Cell::new(None) };
    static WANT: Cell<Option<Want>> = const { Cell::new(None) };
}

/// What a request polled in a [`loop_scope`] waits for when its poll returns pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// `fd` readable (or writable, with `write`), or the time `until`, whichever comes first: then poll again.
    Socket {
        /// The socket's descriptor.
        fd: i64,
        /// Whether the wait is for room to write rather than for bytes to read.
        write: bool,
        /// When the wait ends anyway (a timeout the request checks when polled again).
        until: Instant,
    },
    /// The time `until` (a retry's backoff): then poll again.
    Time {
        /// When to poll again.
        until: Instant,
    },
    /// This request is not served on this thread (it needs the connection pool): poll it on the I/O runtime from
    /// now on, where it goes on as if never suspended.
    Runtime,
}

/// Restores a thread's previous scope when dropped.
struct Restore(Option<Mode>);

impl Drop for Restore {
    fn drop(&mut self) {
        SCOPE.with(|scope| scope.set(self.0));
    }
}

/// Run `f` with blocking requests allowed on this thread: a unary request made in it (polled inside `f`) runs to
/// its end on this thread when the direct path applies. `interrupted` is asked every [`INTERRUPT_TICK`] of waiting
/// (and after a system call a signal interrupted); when it answers true, the request ends with an error and its
/// connection is closed (the caller knows why it stopped). A request the pool must send, polled here outside any
/// runtime, suspends at once with [`Want::Runtime`], which is returned: the caller then goes on polling it inside
/// a runtime (one it need not build for requests on the direct path).
pub fn blocking_scope<R>(interrupted: fn() -> bool, f: impl FnOnce() -> R) -> (R, Option<Want>) {
    scoped(Mode::Block(interrupted), f)
}

/// Run `f` in a scope of `mode`; what a request suspended in it waits for.
fn scoped<R>(mode: Mode, f: impl FnOnce() -> R) -> (R, Option<Want>) {
    let _restore = Restore(SCOPE.with(|scope| scope.replace(Some(mode))));
    WANT.with(|want| want.set(None));
    let out = f();
    (out, WANT.with(Cell::take))
}

/// Run `f` (one poll of a request's future) with requests served without blocking on this thread (an event loop's):
/// a request on the direct path goes as far as the network allows and is suspended at its first wait. Returns what
/// `f` returned and, when the poll was suspended, what the request waits for. A future suspended here holds no
/// waker: its caller polls it again (in a loop scope) once what it waits for comes, or, for [`Want::Runtime`],
/// hands it to the I/O runtime.
pub fn loop_scope<R>(f: impl FnOnce() -> R) -> (R, Option<Want>) {
    scoped(Mode::Loop, f)
}

/// The mode of the scope this thread is in, if any.
pub(crate) fn mode() -> Option<Mode> {
    SCOPE.with(Cell::get)
}

/// The interrupt check of the blocking scope this thread is in, or one that never interrupts (outside a blocking
/// scope, a read on the direct path still ends, at the latest after the read timeout).
pub(crate) fn interrupt_check() -> fn() -> bool {
    fn never() -> bool {
        false
    }
    match mode() {
        Some(Mode::Block(interrupted)) => interrupted,
        _ => never,
    }
}

/// Suspends a request once with what it waits for (in a loop scope), then lets it go on when polled again.
struct Suspend(Option<Want>);

impl std::future::Future for Suspend {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.0.take() {
            Some(want) => {
                WANT.with(|slot| slot.set(Some(want)));
                std::task::Poll::Pending
            }
            None => std::task::Poll::Ready(()),
        }
    }
}

/// A request the pool sends needs a runtime: in a loop scope, or in a blocking scope polled outside any runtime,
/// it suspends once asking for one ([`Want::Runtime`]) and goes on when polled again there; elsewhere, nothing.
pub(crate) async fn to_pool() {
    let needs_runtime = match mode() {
        Some(Mode::Loop) => true,
        Some(Mode::Block(_)) => tokio::runtime::Handle::try_current().is_err(),
        None => false,
    };
    if needs_runtime {
        Suspend(Some(Want::Runtime)).await;
    }
}

/// The descriptor an event loop watches for `socket` (a connection, or one being made).
#[cfg(unix)]
fn descriptor(socket: &impl std::os::fd::AsRawFd) -> i64 {
    i64::from(socket.as_raw_fd())
}

/// The direct path is Unix only (`Direct::for_base`): no loop ever watches a descriptor elsewhere.
#[cfg(not(unix))]
fn descriptor<S>(_socket: &S) -> i64 {
    -1
}

/// Why one exchange failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// No connection could be made (nothing was sent).
    Connect(io::Error),
    /// The connection was not made within the connect timeout (nothing was sent).
    ConnectTimeout,
    /// The connection failed while sending (`sending`) or reading.
    Io { error: io::Error, sending: bool },
    /// No data for the read timeout while sending or reading.
    Idle { sending: bool },
    /// The answer is not HTTP/1.1 the client can read.
    Malformed(String),
    /// The scope's `interrupted` said to stop.
    Interrupted,
}

/// An idle keep-alive connection and when it went idle.
#[derive(Debug)]
pub(crate) struct Idle {
    stream: TcpStream,
    since: Instant,
    /// Whether the socket is in non-blocking mode (last used by a loop scope).
    nonblocking: bool,
}

/// The direct connections of one client to its `http://` origin.
#[derive(Debug)]
pub(crate) struct Direct {
    /// `host[:port]` as in the base URL: the `Host` header.
    authority: String,
    /// `host:port` to resolve and connect to.
    connect_to: String,
    /// The length of `http://authority`, which every request URL of the client starts with.
    origin_len: usize,
    user_agent: String,
    idle_limit: Duration,
    idle: Arc<Mutex<Vec<Idle>>>,
    /// Whether the host is an IP address or `localhost`, which resolve without asking the network: only then may
    /// an event loop's thread connect (it must never wait for a name server).
    resolves_locally: bool,
}

impl Direct {
    /// The direct path to `base_url`, where it applies: plain `http://` with no proxy, on a platform where an idle
    /// connection can be checked without blocking.
    pub(crate) fn for_base(
        base_url: &str,
        proxied: bool,
        user_agent: &str,
        idle_limit: Duration,
    ) -> Option<Self> {
        if proxied || !cfg!(unix) {
            return None;
        }
        let rest = base_url.strip_prefix("http://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let host = match authority.rfind(']') {
            Some(end) => authority.get(1..end).unwrap_or_default(),
            None => authority.split(':').next().unwrap_or(authority),
        };
        let resolves_locally =
            host.parse::<std::net::IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost");
        let connect_to = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Some(Self {
            authority: authority.to_owned(),
            connect_to,
            origin_len: "http://".len() + authority.len(),
            user_agent: user_agent.to_owned(),
            idle_limit,
            idle: Arc::new(Mutex::new(Vec::new())),
            resolves_locally,
        })
    }

    /// Whether a request in `mode` may go on this path (an event loop's thread connects only where no name server
    /// is asked).
    pub(crate) fn serves(&self, mode: Mode) -> bool {
        match mode {
            Mode::Block(_) => true,
            Mode::Loop => self.resolves_locally,
        }
    }

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The `User-Agent` sent when the headers name none.
    pub(crate) fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// The request target (path and query) of `url`, one of this client's URLs.
    pub(crate) fn target<'u>(&self, url: &'u str) -> &'u str {
        match url.get(self.origin_len..) {
            Some("") | None => "/",
            Some(target) => target,
        }
    }

    /// Send `request` (its head and body, in one buffer: one write) and read the answer's head, on an idle
    /// connection or a new one, waiting as `mode` says; its body is then read from the returned [`Response`].
    pub(crate) async fn open(
        &self,
        request: &[u8],
        connect_timeout: Duration,
        read_timeout: Duration,
        mode: Mode,
    ) -> Result<Response, Fail> {
        let clock = Clock {
            mode,
            silence: read_timeout,
        };
        if let Some(mut stream) = self.take_idle(mode) {
            match write_all(&mut stream, request, &clock).await {
                Ok(()) => return self.read_head(stream, &clock).await,
                // The server closed it while it was idle, after the check: the request did not leave, so it goes
                // on a new connection.
                Err(Fail::Io { error, .. }) if closed_before_sending(&error) => {}
                Err(fail) => return Err(fail),
            }
        }
        let mut stream = self.connect(connect_timeout, &clock).await?;
        write_all(&mut stream, request, &clock).await?;
        self.read_head(stream, &clock).await
    }

    /// Read the head of the answer on `stream` (skipping interim 1xx heads).
    async fn read_head(&self, stream: TcpStream, clock: &Clock) -> Result<Response, Fail> {
        let mut body = Body {
            stream: Some(stream),
            buffer: Vec::new(),
            at: 0,
            filled: 0,
            stage: Stage::Done,
            keep_alive: false,
            silence: clock.silence,
            nonblocking: clock.nonblocking(),
            idle: Arc::clone(&self.idle),
        };
        let head = loop {
            if let Some(head) = parse_head(body.unread())? {
                body.at += head.len;
                if (100..200).contains(&head.status) {
                    continue;
                }
                break head;
            }
            if body.fill(READ_CHUNK / 4, Wait::Block(clock)).await? == Filled::End {
                return Err(if body.filled == 0 {
                    Fail::Io {
                        error: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the connection closed before an answer",
                        ),
                        sending: false,
                    }
                } else {
                    truncated()
                });
            }
        };
        body.keep_alive = head.keep_alive;
        body.stage = head.stage;
        Ok(Response {
            status: head.status,
            request_id: head.request_id,
            retry_after: head.retry_after,
            content_type: head.content_type,
            body,
        })
    }

    /// The most recently used idle connection that is still open, closing the stale ones met on the way, in the
    /// blocking mode `mode` needs.
    fn take_idle(&self, mode: Mode) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle {
            stream,
            since,
            nonblocking,
        }) = idle.pop()
        {
            if since.elapsed() < self.idle_limit && open_and_quiet(&stream) {
                let wanted = mode.nonblocking();
                if nonblocking == wanted || stream.set_nonblocking(wanted).is_ok() {
                    return Some(stream);
                }
            }
        }
        None
    }

    /// A new connection, each resolved address tried in turn within the connect timeout.
    async fn connect(&self, timeout: Duration, clock: &Clock) -> Result<TcpStream, Fail> {
        let started = Instant::now();
        let addresses: Vec<SocketAddr> = self
            .connect_to
            .to_socket_addrs()
            .map_err(Fail::Connect)?
            .collect();
        let mut last = None;
        for address in addresses {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Fail::ConnectTimeout);
            }
            match connect_one(address, left, clock).await {
                Ok(stream) => return Ok(stream),
                Err(Fail::Connect(error)) => last = Some(error),
                Err(fail) => return Err(fail),
            }
        }
        Err(Fail::Connect(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the host name resolved to no address",
            )
        })))
    }
}

/// The waits of one exchange: how to wait, and the longest silence allowed.
pub(crate) struct Clock {
    mode: Mode,
    silence: Duration,
}

impl Clock {
    /// Whether the exchange's sockets are non-blocking (a loop scope's).
    fn nonblocking(&self) -> bool {
        self.mode.nonblocking()
    }

    /// After a write or read on `stream` found nothing to do (blocking: it timed out a tick, or a signal
    /// interrupted it; non-blocking: it would have blocked): whether to go on, having waited as the mode says.
    async fn wait(
        &self,
        stream: &TcpStream,
        quiet_since: Instant,
        sending: bool,
    ) -> Result<(), Fail> {
        let until = quiet_since + self.silence;
        match self.mode {
            Mode::Block(interrupted) => {
                if interrupted() {
                    return Err(Fail::Interrupted);
                }
                if Instant::now() >= until {
                    return Err(Fail::Idle { sending });
                }
            }
            Mode::Loop => {
                if Instant::now() >= until {
                    return Err(Fail::Idle { sending });
                }
                Suspend(Some(Want::Socket {
                    fd: descriptor(stream),
                    write: sending,
                    until,
                }))
                .await;
            }
        }
        Ok(())
    }
}

/// Wait `delay` (a retry's backoff) as `mode` says (blocking: asking `interrupted` every tick); false when
/// interrupted.
pub(crate) async fn sleep(delay: Duration, mode: Mode) -> bool {
    let until = Instant::now() + delay;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match mode {
            Mode::Block(interrupted) => {
                std::thread::sleep(left.min(INTERRUPT_TICK));
                if interrupted() {
                    return false;
                }
            }
            Mode::Loop => Suspend(Some(Want::Time { until })).await,
        }
    }
}

/// Whether a failed send means the server had closed the connection before any of the request reached it.
fn closed_before_sending(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// Whether an idle connection is still open with nothing unread: a closed one reads its end at once, and one with
/// bytes the server sent unasked cannot carry a request.
fn open_and_quiet(stream: &TcpStream) -> bool {
    !readable_now(stream)
}

/// Whether a read would return at once (bytes, the end, or an error), checked without reading.
#[cfg(unix)]
fn readable_now(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    match socket2::SockRef::from(stream)
        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    {
        Ok(_) => true,
        Err(err) => err.kind() != io::ErrorKind::WouldBlock,
    }
}

#[cfg(not(unix))]
fn readable_now(_stream: &TcpStream) -> bool {
    true
}

/// Connect to `address` within `timeout`, waiting as the clock's mode says (blocking: asking about interruption
/// every tick); the stream then has no delay, send and receive timeouts of one tick, and the blocking mode of the
/// clock.
async fn connect_one(
    address: SocketAddr,
    timeout: Duration,
    clock: &Clock,
) -> Result<TcpStream, Fail> {
    use mio::{Events, Interest, Poll, Token};
    let started = Instant::now();
    let mut stream = mio::net::TcpStream::connect(address).map_err(Fail::Connect)?;
    // A blocking wait polls the socket with its own poller; a loop's wait is its event loop's.
    let mut poller = match clock.mode {
        Mode::Block(interrupted) => {
            let poll = Poll::new().map_err(Fail::Connect)?;
            poll.registry()
                .register(&mut stream, Token(0), Interest::WRITABLE)
                .map_err(Fail::Connect)?;
            Some((poll, Events::with_capacity(1), interrupted))
        }
        Mode::Loop => None,
    };
    loop {
        if let Some(err) = stream.take_error().map_err(Fail::Connect)? {
            return Err(Fail::Connect(err));
        }
        match stream.peer_addr() {
            Ok(_) => break,
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {}
            Err(err) => return Err(Fail::Connect(err)),
        }
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Fail::ConnectTimeout);
        }
        match poller.as_mut() {
            Some((poll, events, interrupted)) => {
                match poll.poll(events, Some(left.min(INTERRUPT_TICK))) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(Fail::Connect(err)),
                }
                if interrupted() {
                    return Err(Fail::Interrupted);
                }
            }
            None => {
                Suspend(Some(Want::Socket {
                    fd: descriptor(&stream),
                    write: true,
                    until: started + timeout,
                }))
                .await;
            }
        }
    }
    if let Some((poll, _, _)) = poller.as_ref() {
        drop(poll.registry().deregister(&mut stream));
    }
    drop(poller);
    let stream = TcpStream::from(stream);
    let nonblocking = clock.nonblocking();
    let setup = |stream: &TcpStream| -> io::Result<()> {
        stream.set_nonblocking(nonblocking)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(INTERRUPT_TICK))?;
        stream.set_write_timeout(Some(INTERRUPT_TICK))
    };
    setup(&stream).map_err(Fail::Connect)?;
    Ok(stream)
}

/// Whether a failed read or write only timed out (the tick) or was interrupted by a signal.
fn waited(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

async fn write_all(stream: &mut TcpStream, mut bytes: &[u8], clock: &Clock) -> Result<(), Fail> {
    let mut quiet_since = Instant::now();
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => {
                return Err(Fail::Io {
                    error: io::ErrorKind::WriteZero.into(),
                    sending: true,
                })
            }
            Ok(n) => {
                bytes = &bytes[n..];
                quiet_since = Instant::now();
            }
            Err(error) if waited(&error) => clock.wait(stream, quiet_since, true).await?,
            Err(error) => {
                return Err(Fail::Io {
                    error,
                    sending: true,
                })
            }
        }
    }
    Ok(())
}

/// An answer whose head was read: its status, the headers the SDK reads, and its body, still to be read.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) request_id: Option<String>,
    pub(crate) retry_after: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Body,
}

/// Where the reading of a body stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// `left` bytes of a body of known length to come.
    Length { left: usize },
    /// A chunk's size line next.
    ChunkSize,
    /// `left` bytes of the current chunk to come.
    ChunkData { left: usize },
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailers after the last chunk, up to the empty line.
    Trailers,
    /// Everything until the server closes the connection.
    UntilClose,
    /// The whole body was read.
    Done,
}

/// How long a read may wait for the network.
#[derive(Clone, Copy)]
pub(crate) enum Wait<'c> {
    /// As long as the read timeout allows, asking about interruption every tick.
    Block(&'c Clock),
    /// Not at all, but what the network already delivered is read.
    Arrived,
    /// Not at all: only what was read already.
    Buffered,
}

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
enum Filled {
    More,
    End,
    /// Nothing yet, and the caller would not wait.
    Later,
}

/// The next piece of a body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'b> {
    Data(&'b [u8]),
    /// The body is complete; its connection went back to the pool when it can carry another request.
    End,
    /// Nothing more without waiting.
    Later,
}

/// The body of an answer, read from its connection piece by piece; once it is complete, the connection goes back
/// to its pool when it can carry another request. Dropped before that, it closes the connection.
#[derive(Debug)]
pub(crate) struct Body {
    stream: Option<TcpStream>,
    /// Read bytes (`at..filled` not yet consumed), then room for the next reads.
    buffer: Vec<u8>,
    at: usize,
    filled: usize,
    stage: Stage,
    keep_alive: bool,
    /// The read timeout: the longest silence of one read.
    silence: Duration,
    /// Whether the socket is non-blocking (read in a loop scope).
    nonblocking: bool,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl Body {
    fn unread(&self) -> &[u8] {
        &self.buffer[self.at..self.filled]
    }

    /// The clock of reads of this body that block, asking `interrupted` every tick (in the mode the body was
    /// opened in: a body opened in a loop scope never blocks).
    pub(crate) fn clock(&self, interrupted: fn() -> bool) -> Clock {
        Clock {
            mode: if self.nonblocking {
                Mode::Loop
            } else {
                Mode::Block(interrupted)
            },
            silence: self.silence,
        }
    }

    /// Whether the socket is non-blocking (opened or last read in a loop scope).
    pub(crate) fn nonblocking(&self) -> bool {
        self.nonblocking
    }

    /// Put the socket in the blocking mode of the scope reading it now, `mode`: a stream opened on an event loop's
    /// thread and read by a waiting thread blocks there, and one opened by a waiting thread and read on a loop does
    /// not. A socket whose mode cannot be set is closed (the body then ends as cut short).
    pub(crate) fn suit(&mut self, mode: Option<Mode>) {
        let nonblocking = mode.is_some_and(Mode::nonblocking);
        if nonblocking == self.nonblocking {
            return;
        }
        match self.stream.as_ref().map(|s| s.set_nonblocking(nonblocking)) {
            Some(Ok(())) => self.nonblocking = nonblocking,
            Some(Err(_)) => self.stream = None,
            None => {}
        }
    }

    /// Read more from the connection, with room for at least `want` bytes.
    async fn fill(&mut self, want: usize, wait: Wait<'_>) -> Result<Filled, Fail> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Filled::End);
        };
        let clock = match wait {
            Wait::Buffered => return Ok(Filled::Later),
            // A non-blocking socket says so itself, in the read.
            Wait::Arrived if !self.nonblocking && !readable_now(stream) => {
                return Ok(Filled::Later)
            }
            Wait::Arrived => None,
            Wait::Block(clock) => Some(clock),
        };
        if self.at == self.filled && self.at > 0 {
            self.at = 0;
            self.filled = 0;
        }
        let room = want.max(READ_CHUNK / 4);
        if self.buffer.len() - self.filled < room {
            if self.at >= READ_CHUNK {
                // Consumed bytes go: a long body reads through a buffer of bounded size.
                self.buffer.copy_within(self.at..self.filled, 0);
                self.filled -= self.at;
                self.at = 0;
            }
            if self.buffer.len() - self.filled < room {
                self.buffer.resize(self.filled + room, 0);
            }
        }
        let quiet_since = Instant::now();
        loop {
            match stream.read(&mut self.buffer[self.filled..]) {
                Ok(0) => return Ok(Filled::End),
                Ok(n) => {
                    self.filled += n;
                    return Ok(Filled::More);
                }
                Err(error) if waited(&error) => match clock {
                    Some(clock) => clock.wait(stream, quiet_since, false).await?,
                    None => return Ok(Filled::Later),
                },
                Err(error) => {
                    return Err(Fail::Io {
                        error,
                        sending: false,
                    })
                }
            }
        }
    }

    /// Read more of a body that is not complete: its end now means it was cut short.
    async fn more(&mut self, want: usize, wait: Wait<'_>) -> Result<bool, Fail> {
        match self.fill(want, wait).await? {
            Filled::More => Ok(true),
            Filled::End => Err(truncated()),
            Filled::Later => Ok(false),
        }
    }

    /// The position of the next CRLF in the unread bytes, if read yet.
    fn line_end(&self) -> Result<Option<usize>, Fail> {
        match self.unread().windows(2).position(|pair| pair == b"\r\n") {
            Some(pos) => Ok(Some(self.at + pos)),
            None if self.filled - self.at > MAX_LINE => {
                Err(Fail::Malformed("a chunk line too long".to_owned()))
            }
            None => Ok(None),
        }
    }

    /// The body is complete: its connection goes back to the pool when nothing follows it and it stays open.
    fn complete(&mut self) {
        self.stage = Stage::Done;
        let Some(stream) = self.stream.take() else {
            return;
        };
        if !self.keep_alive || self.at != self.filled {
            // Bytes past the body were never asked for: the connection is not reused.
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    stream,
                    since: Instant::now(),
                    nonblocking: self.nonblocking,
                });
            }
        }
    }

    /// The next piece of the body, waiting for it as `wait` allows.
    pub(crate) async fn piece(&mut self, wait: Wait<'_>) -> Result<Piece<'_>, Fail> {
        loop {
            match self.stage {
                Stage::Done => return Ok(Piece::End),
                Stage::Length { left: 0 } => {
                    self.complete();
                    return Ok(Piece::End);
                }
                Stage::ChunkData { left: 0 } => self.stage = Stage::ChunkEnd,
                Stage::Length { left } | Stage::ChunkData { left } => {
                    if self.at == self.filled && !self.more(PIECE_READ, wait).await? {
                        return Ok(Piece::Later);
                    }
                    let start = self.at;
                    let taken = left.min(self.filled - start);
                    self.at += taken;
                    let left = left - taken;
                    self.stage = match self.stage {
                        Stage::Length { .. } => Stage::Length { left },
                        _ => Stage::ChunkData { left },
                    };
                    return Ok(Piece::Data(&self.buffer[start..start + taken]));
                }
                Stage::UntilClose => {
                    if self.at == self.filled {
                        match self.fill(PIECE_READ, wait).await? {
                            Filled::More => {}
                            Filled::End => {
                                self.stage = Stage::Done;
                                self.stream = None;
                                return Ok(Piece::End);
                            }
                            Filled::Later => return Ok(Piece::Later),
                        }
                    }
                    let start = self.at;
                    self.at = self.filled;
                    return Ok(Piece::Data(&self.buffer[start..self.filled]));
                }
                Stage::ChunkSize => {
                    let Some(end) = self.line_end()? else {
                        if !self.more(PIECE_READ, wait).await? {
                            return Ok(Piece::Later);
                        }
                        continue;
                    };
                    let line = &self.buffer[self.at..end];
                    let size_text = line.split(|&b| b == b';').next().unwrap_or(line);
                    let size = std::str::from_utf8(size_text)
                        .ok()
                        .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                        .ok_or_else(|| Fail::Malformed("invalid chunk size".to_owned()))?;
                    self.at = end + 2;
                    self.stage = if size == 0 {
                        Stage::Trailers
                    } else {
                        Stage::ChunkData { left: size }
                    };
                }
                Stage::ChunkEnd => {
                    if self.filled - self.at < 2 {
                        if !self.more(PIECE_READ, wait).await? {
                            return Ok(Piece::Later);
                        }
                        continue;
                    }
                    if &self.buffer[self.at..self.at + 2] != b"\r\n" {
                        return Err(Fail::Malformed("a chunk not followed by CRLF".to_owned()));
                    }
                    self.at += 2;
                    self.stage = Stage::ChunkSize;
                }
                Stage::Trailers => {
                    let Some(end) = self.line_end()? else {
                        if !self.more(PIECE_READ, wait).await? {
                            return Ok(Piece::Later);
                        }
                        continue;
                    };
                    let empty = end == self.at;
                    self.at = end + 2;
                    if empty {
                        self.complete();
                        return Ok(Piece::End);
                    }
                }
            }
        }
    }

    /// The whole body, waiting for it (a body of known length is read into one buffer and kept as it is).
    pub(crate) async fn read_all(mut self, clock: &Clock) -> Result<Bytes, Fail> {
        if let Stage::Length { left } = self.stage {
            let (start, end) = (self.at, self.at + left);
            self.read_to(end, clock).await?;
            self.at = end;
            self.complete();
            return Ok(Bytes::from(std::mem::take(&mut self.buffer)).slice(start..end));
        }
        let mut all = Vec::new();
        loop {
            match self.piece(Wait::Block(clock)).await? {
                Piece::Data(bytes) => all.extend_from_slice(bytes),
                Piece::End => return Ok(Bytes::from(all)),
                Piece::Later => return Err(truncated()),
            }
        }
    }

    /// Read until `end` bytes are in the buffer, straight into its spare capacity: a large body (an embeddings
    /// answer of a megabyte) is read into memory that was never zeroed first.
    async fn read_to(&mut self, end: usize, clock: &Clock) -> Result<(), Fail> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(truncated());
        };
        self.buffer.truncate(self.filled);
        self.buffer.reserve_exact(end.saturating_sub(self.filled));
        let mut quiet_since = Instant::now();
        while self.buffer.len() < end {
            let before = self.buffer.len();
            let want = u64::try_from(end - before).unwrap_or(u64::MAX);
            let read = (&mut *stream).take(want).read_to_end(&mut self.buffer);
            self.filled = self.buffer.len();
            if self.filled > before {
                quiet_since = Instant::now();
            }
            match read {
                // The limit reached, or the end of the stream before it.
                Ok(_) if self.filled < end => return Err(truncated()),
                Ok(_) => {}
                Err(error) if waited(&error) => clock.wait(stream, quiet_since, false).await?,
                Err(error) => {
                    return Err(Fail::Io {
                        error,
                        sending: false,
                    })
                }
            }
        }
        Ok(())
    }

    /// Finish the body with what the network already delivered, so that its connection can be reused; a body that
    /// needs more is dropped with its connection. For a stream whose answer is complete (its last event read).
    pub(crate) fn finish_now(mut self) {
        use futures_util::FutureExt as _;
        // A read that may not wait ends in its first poll.
        while let Some(Ok(Piece::Data(_))) = self.piece(Wait::Arrived).now_or_never() {}
    }
}

fn truncated() -> Fail {
    Fail::Io {
        error: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the whole answer arrived",
        ),
        sending: false,
    }
}

/// The head of an answer: status, where its body's reading starts (its framing), and whether the connection stays
/// open after it.
struct Head {
    status: u16,
    stage: Stage,
    keep_alive: bool,
    request_id: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
    len: usize,
}

/// Parse the head at the start of `bytes`; `None` while incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Fail> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            return Err(Fail::Malformed(format!(
                "invalid HTTP response head: {err}"
            )))
        }
    };
    let status = response.code.unwrap_or(0);
    let mut head = Head {
        status,
        stage: Stage::UntilClose,
        keep_alive: response.version == Some(1),
        request_id: None,
        retry_after: None,
        content_type: None,
        len,
    };
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map(str::trim);
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value.ok().and_then(|v| v.parse::<usize>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => return Err(Fail::Malformed("invalid content-length".to_owned())),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
            if !chunked {
                return Err(Fail::Malformed(
                    "a transfer-encoding other than chunked".to_owned(),
                ));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if let Ok(value) = value {
                for option in value.split(',') {
                    let option = option.trim();
                    if option.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if option.eq_ignore_ascii_case("keep-alive") {
                        head.keep_alive = true;
                    }
                }
            }
        } else if name.eq_ignore_ascii_case("x-request-id") {
            head.request_id = value.ok().map(str::to_owned);
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.ok().map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = value.ok().map(str::to_owned);
        }
    }
    head.stage = if matches!(status, 204 | 304) {
        Stage::Length { left: 0 }
    } else if chunked {
        Stage::ChunkSize
    } else if let Some(left) = length {
        Stage::Length { left }
    } else {
        head.keep_alive = false;
        Stage::UntilClose
    };
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some(head)) => head,
            _ => unreachable!("a complete head: {text:?}"),
        }
    }

    #[test]
    fn heads_give_status_framing_and_reuse() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-request-id: req_1\r\n\r\n");
        assert_eq!(h.status, 200);
        assert_eq!(h.stage, Stage::Length { left: 12 });
        assert!(h.keep_alive);
        assert_eq!(h.request_id.as_deref(), Some("req_1"));
        let h = head(
            "HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(h.retry_after.as_deref(), Some("2"));
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.stage, Stage::ChunkSize);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.stage, Stage::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(None)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(Fail::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            Err(Fail::Malformed(_))
        ));
    }

    #[test]
    fn the_target_is_the_url_after_the_origin() {
        let Some(direct) = Direct::for_base("http://127.0.0.1:8080", false, "ua", INTERRUPT_TICK)
        else {
            return; // Not a platform with the direct path.
        };
        assert_eq!(direct.authority(), "127.0.0.1:8080");
        assert_eq!(direct.target("http://127.0.0.1:8080/v1/x?y=1"), "/v1/x?y=1");
        assert_eq!(direct.target("http://127.0.0.1:8080"), "/");
        let plain = Direct::for_base("http://example.com/base", false, "ua", INTERRUPT_TICK);
        assert_eq!(
            plain.map(|d| d.connect_to),
            Some("example.com:80".to_owned())
        );
        let v6 = Direct::for_base("http://[::1]", false, "ua", INTERRUPT_TICK);
        assert_eq!(v6.map(|d| d.connect_to), Some("[::1]:80".to_owned()));
        assert!(Direct::for_base("https://h", false, "ua", INTERRUPT_TICK).is_none());
        assert!(Direct::for_base("http://h", true, "ua", INTERRUPT_TICK).is_none());
        assert!(Direct::for_base("http://u:p@h", false, "ua", INTERRUPT_TICK).is_none());
    }
}
