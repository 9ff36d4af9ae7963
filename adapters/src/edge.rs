//! Client connections registered once, edge-triggered, and their deadlines.
//!
//! async-io registers every source one-shot, so each time a keep-alive
//! connection waits for its next request its descriptor is re-armed with an
//! `epoll_ctl`; and because a read that follows a wake-up does not go through
//! async-io's readiness bookkeeping, the next wait first sees a stale "ready",
//! reads once more and gets EAGAIN. With the read that fails before any wait,
//! that was five system calls per request where nginx makes three.
//!
//! Here a connection is added once (`EPOLLET`) to an epoll instance of our
//! own, and readiness is tracked in user space: a flag per direction, set by
//! the pump when the kernel reports an edge, cleared by the connection when
//! the socket is drained. The instance's descriptor is itself one source in
//! async-io's reactor: one wake-up of the pump task ([`EdgePoller::run`])
//! hands out the readiness of every connection that got data, so timers,
//! channels, the listener and the stores' sockets stay on async-io untouched.
//!
//! A read that returns fewer bytes than asked for has emptied the socket (TCP
//! stops short only when its receive queue is empty), so it clears readiness
//! without the read that would fail with EAGAIN; bytes arriving later raise a
//! new edge. Each flag carries a tick: a clear is dropped if an edge arrived
//! after the flag was read, so no wake-up is lost between a read and its
//! clear. Once the peer has hung up, reading stays ready (the end of the
//! stream is a read of its own and raises no further edge).
//!
//! Waiting for the next request had a timer and a shutdown listener of its
//! own per request (a timer insert wakes async-io's reactor); instead each
//! connection carries a read deadline, and one task ([`EdgePoller::sweep`])
//! ends the reads whose deadline has passed, to within [`SWEEP`]. A shutdown
//! ([`EdgePoller::drain`]) ends the reads of connections waiting between
//! requests.
//!
//! Elsewhere than Linux (or built with `--cfg kes_portable_io`, which is how
//! the tests cover it) connections wait through async-io as usual; deadlines
//! and draining work the same.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncWrite};

/// How often read deadlines are checked: a read ends at most this long
/// after its deadline.
pub const SWEEP: Duration = Duration::from_millis(250);

/// Readiness bits; the rest of the word counts edges.
const READ: u64 = 1;
const WRITE: u64 = 2;
/// The peer shut down (or the socket failed): sticky. A short read then
/// says nothing about what is left.
const HUP: u64 = 4;
const TICK: u64 = 8;

/// Deadline words: none set, or passed (set by the sweep); otherwise
/// nanoseconds since the poller's epoch, plus one.
const NO_DEADLINE: u64 = 0;
const EXPIRED: u64 = u64::MAX;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where client connections wait: their readiness, deadlines and wakers.
pub struct EdgePoller {
    slots: Mutex<Slots>,
    epoch: Instant,
    draining: AtomicBool,
    #[cfg(all(target_os = "linux", not(kes_portable_io)))]
    epoll: async_io::Async<std::os::fd::OwnedFd>,
}

/// Connections by slot; a slot's generation changes when it is reused, so a
/// late event for a closed connection wakes no one.
#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    ready: Option<Arc<Readiness>>,
}

impl Slots {
    fn insert(&mut self, ready: Arc<Readiness>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Slot::default());
                (self.entries.len() - 1) as u32
            }
        };
        let slot = &mut self.entries[index as usize];
        slot.ready = Some(ready);
        (u64::from(slot.generation) << 32) | u64::from(index)
    }

    #[cfg_attr(any(not(target_os = "linux"), kes_portable_io), allow(dead_code))]
    fn get(&self, key: u64) -> Option<&Arc<Readiness>> {
        let slot = self.entries.get((key & 0xffff_ffff) as usize)?;
        (u64::from(slot.generation) == key >> 32).then_some(slot.ready.as_ref()?)
    }

    fn remove(&mut self, key: u64) {
        let index = (key & 0xffff_ffff) as u32;
        if let Some(slot) = self.entries.get_mut(index as usize) {
            if u64::from(slot.generation) == key >> 32 && slot.ready.take().is_some() {
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(index);
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Arc<Readiness>> {
        self.entries.iter().filter_map(|s| s.ready.as_ref())
    }
}

/// One connection's readiness, read deadline, and the tasks waiting on it.
struct Readiness {
    state: AtomicU64,
    deadline: AtomicU64,
    /// Waiting for a next request that has not started: a drain ends it.
    idle: AtomicBool,
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            // Assumed ready both ways until a read or write says otherwise.
            state: AtomicU64::new(READ | WRITE),
            deadline: AtomicU64::new(NO_DEADLINE),
            idle: AtomicBool::new(false),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
        }
    }
}

impl Readiness {
    /// An edge: set the bits, count it, and collect who waits on them.
    fn raise(&self, bits: u64, wake: &mut Vec<Waker>) {
        let _ = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some(s.wrapping_add(TICK) | bits)
        });
        if bits & READ != 0 {
            wake.extend(lock(&self.reader).take());
        }
        if bits & WRITE != 0 {
            wake.extend(lock(&self.writer).take());
        }
    }

    /// Clears `bit` unless an edge arrived since `seen` was read (or, for
    /// reading, the peer has hung up).
    #[cfg_attr(any(not(target_os = "linux"), kes_portable_io), allow(dead_code))]
    fn clear(&self, bit: u64, seen: u64) {
        let _ = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            let same_edge = s & !(TICK - 1) == seen & !(TICK - 1);
            let hung_up = bit == READ && s & HUP != 0;
            (same_edge && !hung_up).then_some(s & !bit)
        });
    }

    /// Registers the task to be woken by the next edge in `bit`'s direction
    /// (or a sweep); returns the state as of after the registration.
    fn register(&self, bit: u64, cx: &mut Context<'_>) -> u64 {
        {
            let mut w = lock(if bit == READ { &self.reader } else { &self.writer });
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        self.state.load(Ordering::Acquire)
    }

    /// The state if `bit` is set; otherwise registers the task and returns
    /// `None` (unless an edge raced the registration).
    #[cfg_attr(any(not(target_os = "linux"), kes_portable_io), allow(dead_code))]
    fn poll(&self, bit: u64, cx: &mut Context<'_>) -> Option<u64> {
        let s = self.state.load(Ordering::Acquire);
        if s & bit != 0 {
            return Some(s);
        }
        // An edge raised between the load and the registration found no
        // waker to wake: look again.
        let s = self.register(bit, cx);
        (s & bit != 0).then_some(s)
    }
}

impl EdgePoller {
    /// Ends reads whose deadline is at or before `now`; returns how many.
    fn expire(&self, now: Instant) -> usize {
        let now = self.nanos(now);
        let mut wake = Vec::new();
        let mut expired = 0;
        {
            let slots = lock(&self.slots);
            for r in slots.live() {
                let d = r.deadline.load(Ordering::Acquire);
                if d != NO_DEADLINE
                    && d != EXPIRED
                    && d <= now
                    // Lost if the connection set a new deadline meanwhile.
                    && r.deadline
                        .compare_exchange(d, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    r.raise(READ, &mut wake);
                    expired += 1;
                }
            }
        }
        wake.into_iter().for_each(Waker::wake);
        expired
    }

    /// Checks deadlines every [`SWEEP`] until the task is dropped.
    pub async fn sweep(self: Arc<Self>) {
        loop {
            async_io::Timer::after(SWEEP).await;
            self.expire(Instant::now());
        }
    }

    /// Shutting down: connections waiting for a next request that has not
    /// started stop waiting (their read fails), now and from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let mut wake = Vec::new();
        for r in lock(&self.slots).live() {
            r.raise(READ, &mut wake);
        }
        wake.into_iter().for_each(Waker::wake);
    }

    fn nanos(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(n).unwrap_or(EXPIRED - 1).saturating_add(1).min(EXPIRED - 1)
    }

    fn add(&self) -> (Arc<Readiness>, u64) {
        let ready = Arc::new(Readiness::default());
        let key = lock(&self.slots).insert(ready.clone());
        (ready, key)
    }
}

/// A client TCP connection of an [`EdgePoller`]; closing it (drop) removes
/// it.
pub struct EdgeStream {
    #[cfg(all(target_os = "linux", not(kes_portable_io)))]
    tcp: TcpStream,
    #[cfg(any(not(target_os = "linux"), kes_portable_io))]
    io: async_io::Async<TcpStream>,
    ready: Arc<Readiness>,
    key: u64,
    poller: Arc<EdgePoller>,
}

impl Drop for EdgeStream {
    fn drop(&mut self) {
        lock(&self.poller.slots).remove(self.key);
    }
}

impl EdgeStream {
    /// Reads fail with `TimedOut` once `at` has passed (checked every
    /// [`SWEEP`]); `None` lifts the deadline.
    pub fn set_deadline(&self, at: Option<Instant>) {
        let d = at.map_or(NO_DEADLINE, |at| self.poller.nanos(at));
        self.ready.deadline.store(d, Ordering::Release);
    }

    /// Marks the connection as waiting for a request that has not started
    /// (a drain ends such a read) or not.
    pub fn set_idle(&self, idle: bool) {
        self.ready.idle.store(idle, Ordering::SeqCst);
    }

    /// Why a read must end now, if it must.
    fn interrupted(&self) -> Option<io::Error> {
        if self.ready.deadline.load(Ordering::Acquire) == EXPIRED {
            return Some(io::Error::new(io::ErrorKind::TimedOut, "read deadline passed"));
        }
        if self.ready.idle.load(Ordering::SeqCst) && self.poller.draining.load(Ordering::SeqCst) {
            return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "server shutting down"));
        }
        None
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self.get_ref().shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.read_ready(cx, buf)
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_ready(cx, |mut t| io::Write::write(&mut t, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_ready(cx, |mut t| io::Write::write_vectored(&mut t, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

#[cfg(all(target_os = "linux", not(kes_portable_io)))]
mod epoll_io {
    use std::io::{self, Read};
    use std::mem::MaybeUninit;
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use async_io::Async;
    use rustix::event::{epoll, Timespec};

    use super::{lock, EdgePoller, EdgeStream, HUP, READ, WRITE};

    /// Events taken from the kernel per `epoll_wait`; a full batch is
    /// followed by another wait before the pump sleeps.
    const BATCH: usize = 256;

    impl EdgePoller {
        /// A new epoll instance, registered with async-io's reactor.
        pub fn new() -> io::Result<Arc<Self>> {
            let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            Ok(Arc::new(Self {
                slots: Default::default(),
                epoch: std::time::Instant::now(),
                draining: Default::default(),
                epoll: Async::new(fd)?,
            }))
        }

        /// Makes `tcp` non-blocking and adds it, edge-triggered, for
        /// reading, writing and hang-ups.
        pub fn register(self: &Arc<Self>, tcp: TcpStream) -> io::Result<EdgeStream> {
            tcp.set_nonblocking(true)?;
            let (ready, key) = self.add();
            let stream = EdgeStream { tcp, ready, key, poller: self.clone() };
            let flags = epoll::EventFlags::IN
                | epoll::EventFlags::OUT
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ET;
            epoll::add(self.epoll.get_ref(), &stream.tcp, epoll::EventData::new_u64(key), flags)?;
            Ok(stream)
        }

        /// Hands out edges until the task is dropped with its executor.
        /// Returns only if epoll fails.
        pub async fn run(self: Arc<Self>) -> io::Error {
            let mut wake = Vec::with_capacity(BATCH);
            loop {
                if let Err(e) = self.epoll.readable().await {
                    return e;
                }
                loop {
                    let full = match self.take_events(&mut wake) {
                        Ok(full) => full,
                        Err(e) => return e,
                    };
                    wake.drain(..).for_each(Waker::wake);
                    if !full {
                        break;
                    }
                }
            }
        }

        /// One `epoll_wait` without blocking: raises the edges it reports and
        /// collects who to wake. True if the batch was full (more may wait).
        fn take_events(&self, wake: &mut Vec<Waker>) -> io::Result<bool> {
            // On the stack: an epoll event holds a pointer-sized union, which
            // is not `Send`, so it must not live across the pump's awaits.
            let mut buf = [MaybeUninit::<epoll::Event>::uninit(); BATCH];
            let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
            let events = loop {
                match epoll::wait(self.epoll.get_ref(), &mut buf, Some(&zero)) {
                    Ok((events, _)) => break events,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let slots = lock(&self.slots);
            for ev in events.iter() {
                let Some(ready) = slots.get(ev.data.u64()) else { continue };
                let f = ev.flags;
                let mut bits = 0;
                if f.intersects(epoll::EventFlags::IN | epoll::EventFlags::PRI) {
                    bits |= READ;
                }
                if f.intersects(
                    epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    bits |= READ | HUP;
                }
                if f.intersects(
                    epoll::EventFlags::OUT | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    bits |= WRITE;
                }
                ready.raise(bits, wake);
            }
            Ok(events.len() == BATCH)
        }
    }

    impl EdgeStream {
        /// The underlying socket (socket options, addresses).
        pub fn get_ref(&self) -> &TcpStream {
            &self.tcp
        }

        pub(super) fn read_ready(
            &self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            loop {
                if let Some(e) = self.interrupted() {
                    return Poll::Ready(Err(e));
                }
                let Some(seen) = self.ready.poll(READ, cx) else { return Poll::Pending };
                match (&self.tcp).read(buf) {
                    // Short: the receive queue is empty now.
                    Ok(n) if n > 0 && n < buf.len() => {
                        self.ready.clear(READ, seen);
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready.clear(READ, seen),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => return Poll::Ready(r),
                }
            }
        }

        pub(super) fn write_ready(
            &self,
            cx: &mut Context<'_>,
            mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
        ) -> Poll<io::Result<usize>> {
            loop {
                let Some(seen) = self.ready.poll(WRITE, cx) else { return Poll::Pending };
                match write(&self.tcp) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.ready.clear(WRITE, seen)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => return Poll::Ready(r),
                }
            }
        }
    }
}

#[cfg(any(not(target_os = "linux"), kes_portable_io))]
mod portable_io {
    use std::io::{self, Read};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use async_io::Async;

    use super::{EdgePoller, EdgeStream, READ};

    impl EdgePoller {
        pub fn new() -> io::Result<Arc<Self>> {
            Ok(Arc::new(Self {
                slots: Default::default(),
                epoch: std::time::Instant::now(),
                draining: Default::default(),
            }))
        }

        /// An async-io source, known to the poller for deadlines and drains.
        pub fn register(self: &Arc<Self>, tcp: TcpStream) -> io::Result<EdgeStream> {
            let io = Async::new(tcp)?;
            let (ready, key) = self.add();
            Ok(EdgeStream { io, ready, key, poller: self.clone() })
        }

        /// Nothing to pump: async-io's reactor wakes the connections.
        pub async fn run(self: Arc<Self>) -> io::Error {
            std::future::pending().await
        }
    }

    impl EdgeStream {
        /// The underlying socket (socket options, addresses).
        pub fn get_ref(&self) -> &TcpStream {
            self.io.get_ref()
        }

        pub(super) fn read_ready(
            &self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            loop {
                if let Some(e) = self.interrupted() {
                    return Poll::Ready(Err(e));
                }
                match self.io.get_ref().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return Poll::Ready(r),
                }
                // For the sweep and the drain, then for the socket; a sweep
                // between the check above and here is seen on the next turn.
                self.ready.register(READ, cx);
                if self.interrupted().is_some() {
                    continue;
                }
                match self.io.poll_readable(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }

        pub(super) fn write_ready(
            &self,
            cx: &mut Context<'_>,
            mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
        ) -> Poll<io::Result<usize>> {
            loop {
                match write(self.io.get_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return Poll::Ready(r),
                }
                match self.io.poll_writable(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::Executor;

    use super::*;

    /// An executor on two threads (as the server runs) with the pump on it,
    /// and a listener whose connections are handed to `serve`.
    fn serve<F, Fut>(serve: F) -> (std::net::SocketAddr, smol::channel::Sender<()>, Arc<EdgePoller>)
    where
        F: Fn(EdgeStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
        let poller = EdgePoller::new().unwrap();
        ex.spawn(poller.clone().run()).detach();
        ex.spawn(poller.clone().sweep()).detach();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        for _ in 0..2 {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())));
        }
        let (spawner, shared) = (ex.clone(), poller.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let conn = poller.register(tcp).unwrap();
                spawner.spawn(serve(conn)).detach();
            }
        });
        (addr, stop, shared)
    }

    fn client(addr: std::net::SocketAddr) -> TcpStream {
        let c = TcpStream::connect(addr).unwrap();
        // A lost wake-up fails the test instead of hanging it.
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.set_nodelay(true).unwrap();
        c
    }

    /// Echoes length-prefixed messages, reading through a 4 KiB buffer as
    /// rustls does, so reads are both short (drained) and full.
    async fn echo(mut conn: EdgeStream) {
        let mut buf = vec![0u8; 4096];
        let mut pending = Vec::new();
        loop {
            while pending.len() >= 4 {
                let n = u32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
                if pending.len() < 4 + n {
                    break;
                }
                let msg: Vec<u8> = pending.drain(..4 + n).collect();
                if conn.write_all(&msg).await.is_err() {
                    return;
                }
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn many_connections_ping_pong_without_a_lost_wakeup() {
        let (addr, _stop, _) = serve(echo);
        let clients: Vec<_> = (0..16u32)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = client(addr);
                    let mut x = 0x9e37_79b9u32.wrapping_mul(c + 1);
                    for i in 0..1500u32 {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        // Mostly small (one short read), sometimes past the
                        // 4 KiB buffer (full reads, then a short one).
                        let len =
                            if i % 7 == 0 { (x % 20_000) as usize } else { (x % 300) as usize };
                        let mut msg = (len as u32).to_be_bytes().to_vec();
                        msg.extend((0..len).map(|k| (k as u32 ^ x) as u8));
                        // Sometimes in two writes with a pause: the second
                        // part must raise a new edge after a drained read.
                        if i % 50 == 0 && len > 10 {
                            s.write_all(&msg[..10]).unwrap();
                            std::thread::sleep(Duration::from_millis(2));
                            s.write_all(&msg[10..]).unwrap();
                        } else {
                            s.write_all(&msg).unwrap();
                        }
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back).unwrap_or_else(|e| {
                            panic!("client {c} message {i} ({len} bytes): {e}")
                        });
                        assert_eq!(back, msg, "client {c} message {i}");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    }

    #[test]
    fn a_write_into_a_full_socket_waits_for_space() {
        const SIZE: usize = 16 << 20;
        let (addr, _stop, _) = serve(|mut conn: EdgeStream| async move {
            let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
            conn.write_all(&data).await.unwrap();
            conn.close().await.unwrap();
        });
        let mut s = client(addr);
        // The server fills the socket buffers and hits EAGAIN meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), SIZE);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn a_peer_that_closes_reads_as_end_of_stream() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let (addr, _stop, _) = serve(move |mut conn: EdgeStream| {
            let tx = tx.lock().unwrap().clone();
            async move {
                let mut all = Vec::new();
                let mut buf = [0u8; 64];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => all.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("{e}"),
                    }
                    // Let the next bytes and the FIN arrive together, in
                    // one edge, before the next read.
                    async_io::Timer::after(Duration::from_millis(100)).await;
                }
                tx.send(all).unwrap();
            }
        });
        let mut s = client(addr);
        s.write_all(b"first").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b" second").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(20)).expect("end of stream never seen");
        assert_eq!(got, b"first second");
    }
    #[test]
    fn a_clear_loses_to_a_newer_edge() {
        let r = Readiness::default();
        r.raise(READ, &mut Vec::new());
        let seen = r.state.load(Ordering::Acquire);
        r.raise(READ, &mut Vec::new()); // data arrived between a read and its clear
        r.clear(READ, seen);
        assert_ne!(r.state.load(Ordering::Acquire) & READ, 0, "the newer edge survives");
        r.clear(READ, r.state.load(Ordering::Acquire));
        assert_eq!(r.state.load(Ordering::Acquire) & READ, 0);
    }

    #[test]
    fn after_a_hang_up_reading_stays_ready() {
        let r = Readiness::default();
        // Data and the FIN in one edge: the short read that takes the
        // data must not hide the end of the stream behind it.
        r.raise(READ | HUP, &mut Vec::new());
        r.clear(READ, r.state.load(Ordering::Acquire));
        assert_ne!(r.state.load(Ordering::Acquire) & READ, 0);
        r.clear(WRITE, r.state.load(Ordering::Acquire));
        assert_eq!(r.state.load(Ordering::Acquire) & WRITE, 0);
    }

    #[test]
    fn a_reused_slot_ignores_the_old_key() {
        let mut slots = Slots::default();
        let old = slots.insert(Arc::default());
        slots.remove(old);
        let new = slots.insert(Arc::default());
        assert_eq!(old & 0xffff_ffff, new & 0xffff_ffff, "the slot is reused");
        assert!(slots.get(old).is_none(), "a late event for the old connection wakes no one");
        assert!(slots.get(new).is_some());
        slots.remove(old); // a stale remove leaves the new connection alone
        assert!(slots.get(new).is_some());
    }

    /// How a server's read ended, and when.
    type ReadEnd = std::sync::mpsc::Receiver<(io::Result<usize>, Instant)>;

    /// A server task that reads once after `prepare` and reports how the
    /// read ended and when.
    fn one_read(
        prepare: impl Fn(&EdgeStream) + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, Arc<EdgePoller>, ReadEnd) {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let (addr, stop, poller) = serve(move |mut conn: EdgeStream| {
            prepare(&conn);
            let tx = lock(&tx).clone();
            async move {
                let mut buf = [0u8; 64];
                let r = conn.read(&mut buf).await;
                let _ = tx.send((r, Instant::now()));
                // Keep the connection open until the test ends.
                smol::future::pending::<()>().await;
            }
        });
        std::mem::forget(stop);
        (addr, poller, rx)
    }

    #[test]
    fn a_read_past_its_deadline_fails_timed_out() {
        let start = Instant::now();
        let (addr, _poller, rx) =
            one_read(move |c| c.set_deadline(Some(Instant::now() + Duration::from_millis(300))));
        let _c = client(addr);
        let (r, at) = rx.recv_timeout(Duration::from_secs(20)).expect("the read never ended");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(at >= start + Duration::from_millis(300), "ended before its deadline");
    }

    #[test]
    fn a_read_without_a_deadline_waits_for_its_bytes() {
        let (addr, poller, rx) = one_read(|c| c.set_deadline(None));
        let mut c = client(addr);
        std::thread::sleep(SWEEP * 3);
        poller.expire(Instant::now() + Duration::from_secs(3600));
        assert!(rx.try_recv().is_err(), "a read with no deadline ended");
        c.write_all(b"hello").unwrap();
        let (r, _) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(r.unwrap(), 5);
    }

    #[test]
    fn a_deadline_set_again_replaces_an_expired_one() {
        let poller = EdgePoller::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = client(listener.local_addr().unwrap());
        let conn = poller.register(listener.accept().unwrap().0).unwrap();
        conn.set_deadline(Some(Instant::now()));
        assert_eq!(poller.expire(Instant::now() + Duration::from_millis(1)), 1);
        assert_eq!(conn.interrupted().unwrap().kind(), io::ErrorKind::TimedOut);
        conn.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        assert!(conn.interrupted().is_none());
        assert_eq!(poller.expire(Instant::now()), 0);
    }

    #[test]
    fn a_drain_ends_reads_between_requests_only() {
        let (addr, poller, rx) = one_read(|c| c.set_idle(true));
        let _idle = client(addr);
        let (busy_addr, busy_poller, busy_rx) = one_read(|c| c.set_idle(false));
        let mut busy = client(busy_addr);
        std::thread::sleep(Duration::from_millis(100));
        poller.drain();
        busy_poller.drain();
        let (r, _) = rx.recv_timeout(Duration::from_secs(20)).expect("the idle read never ended");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        // A request under way is read to its end.
        std::thread::sleep(Duration::from_millis(100));
        assert!(busy_rx.try_recv().is_err(), "a read within a request was ended by the drain");
        busy.write_all(b"rest").unwrap();
        let (r, _) = busy_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(r.unwrap(), 4);
    }
}
