//! The one task that owns the core: inputs arrive over a channel, outputs are
//! executed (store commands), delivered (responses) or published (events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::rng::FastRng;
use kes_core::{
    Caller, Command, CommandId, Config, Request, RequestId, Response, Server, StoreError,
    StoreReply,
};
use smol::channel::{Receiver, Sender};

use crate::clock;
use crate::log::LogHub;
use crate::store::KeyStore;
use crate::sysinfo::LiveCounters;

/// An input for the core.
pub enum Input {
    /// A request and where its response goes.
    Request {
        /// Who is calling.
        caller: Caller,
        /// The request.
        req: Request,
        /// Receives the response.
        reply: Sender<Response>,
    },
    /// The result of a store command.
    Store(CommandId, Result<StoreReply, StoreError>),
    /// A new configuration.
    Reload(Box<Config>),
    /// Stop the driver.
    Stop,
}

/// How connection tasks reach the driver.
#[derive(Clone)]
pub struct DriverHandle {
    tx: Sender<Input>,
}

impl DriverHandle {
    /// Sends a request and waits for its response. None if the driver is gone.
    pub async fn call(&self, caller: Caller, req: Request) -> Option<Response> {
        let (reply, rx) = smol::channel::bounded(1);
        self.tx.send(Input::Request { caller, req, reply }).await.ok()?;
        rx.recv().await.ok()
    }

    /// Like [`Self::call`], answering on a connection's reusable channel.
    pub async fn call_with(
        &self,
        reply: &(Sender<Response>, Receiver<Response>),
        caller: Caller,
        req: Request,
    ) -> Option<Response> {
        self.tx.send(Input::Request { caller, req, reply: reply.0.clone() }).await.ok()?;
        reply.1.recv().await.ok()
    }

    /// Sends any input.
    pub fn send(&self, input: Input) {
        let _ = self.tx.try_send(input);
    }
}

/// Runs the startup phase synchronously: declared keys are created before
/// anything is served. Returns the failures, if any.
pub fn run_startup(server: &mut Server, store: &dyn KeyStore, hub: &LogHub) -> Result<(), String> {
    let mut rng = FastRng::new();
    while server.starting() {
        let Some((id, cmd)) = server.poll_command() else {
            break;
        };
        let result = store.execute(cmd);
        server.handle_store_result(id, result, clock::now(), &mut rng);
        while let Some(e) = server.poll_event() {
            hub.publish(&e);
        }
    }
    match server.startup_failures() {
        [] => Ok(()),
        failures => Err(failures.join("; ")),
    }
}

/// Spawns the driver task on `ex`; store calls run as tasks on it too.
pub fn spawn(
    ex: &Arc<smol::Executor<'static>>,
    server: Server,
    store: Arc<dyn KeyStore>,
    hub: Arc<LogHub>,
    live: Arc<LiveCounters>,
) -> (DriverHandle, smol::Task<()>) {
    let (tx, rx) = smol::channel::unbounded();
    let handle = DriverHandle { tx: tx.clone() };
    let out = Outputs { store, tx, ex: Arc::downgrade(ex) };
    let task = ex.spawn(run(server, out, hub, live, rx));
    (handle, task)
}

/// Where the driver sends store commands, and how their results come back.
struct Outputs {
    store: Arc<dyn KeyStore>,
    tx: Sender<Input>,
    /// The server's executor, held weakly (the driver runs on it). Store
    /// calls run there, on the thread that owns the connections and the
    /// core, not on smol's global executor: a store result then needs no
    /// cross-thread wake-up to reach the core (measured in loadbench's
    /// uncached listing).
    ex: std::sync::Weak<smol::Executor<'static>>,
}

impl Outputs {
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        match self.ex.upgrade() {
            Some(ex) => ex.spawn(fut).detach(),
            None => smol::spawn(fut).detach(),
        }
    }
}

enum Wake {
    Input(Input),
    Timer,
    Closed,
}

async fn run(
    mut server: Server,
    out: Outputs,
    hub: Arc<LogHub>,
    live: Arc<LiveCounters>,
    rx: Receiver<Input>,
) {
    let mut rng = FastRng::new();
    let mut replies: HashMap<RequestId, Sender<Response>> = HashMap::new();
    let mut next_id = 0u64;
    let mut timer = async_io::Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = server.poll_timeout().map(|(t, _)| t);
        if deadline != armed {
            timer = deadline.map_or_else(async_io::Timer::never, async_io::Timer::at);
            armed = deadline;
        }
        let wake = smol::future::or(
            async {
                match rx.recv().await {
                    Ok(i) => Wake::Input(i),
                    Err(_) => Wake::Closed,
                }
            },
            async {
                (&mut timer).await;
                Wake::Timer
            },
        )
        .await;
        let now = clock::now();
        server.set_audit_enabled(hub.wants_audit());
        server.set_audit_stalled(hub.audit_stalled());
        match wake {
            Wake::Closed | Wake::Input(Input::Stop) => return,
            Wake::Timer => {
                armed = None;
                server.handle_timeout(now, &mut rng);
            }
            Wake::Input(Input::Request { caller, req, reply }) => {
                // Process facts are read only when a request reports them.
                if req.path.starts_with("/v1/metrics") || req.path.starts_with("/v1/status") {
                    server.set_system_info(crate::sysinfo::read(&live));
                }
                next_id += 1;
                let id = RequestId(next_id);
                replies.insert(id, reply);
                server.handle_request(id, caller, req, now, &mut rng);
            }
            Wake::Input(Input::Store(id, result)) => {
                server.handle_store_result(id, result, now, &mut rng)
            }
            Wake::Input(Input::Reload(config)) => server.reload(*config, now),
        }
        drain(&mut server, &out, &hub, &mut replies, &mut rng);
    }
}

fn drain(
    server: &mut Server,
    out: &Outputs,
    hub: &LogHub,
    replies: &mut HashMap<RequestId, Sender<Response>>,
    rng: &mut FastRng,
) {
    loop {
        let mut progress = false;
        while let Some((id, cmd)) = server.poll_command() {
            progress = true;
            execute(server, out, id, cmd, rng);
        }
        // Events first: a request's audit line is written before its response leaves.
        while let Some(e) = server.poll_event() {
            progress = true;
            hub.publish(&e);
        }
        while let Some((id, resp)) = server.poll_response() {
            progress = true;
            if let Some(reply) = replies.remove(&id) {
                let _ = reply.try_send(resp);
            }
        }
        if !progress {
            return;
        }
    }
}

fn execute(server: &mut Server, out: &Outputs, id: CommandId, cmd: Command, rng: &mut FastRng) {
    let cmd = match out.store.execute_async(cmd) {
        Ok(call) => {
            let tx = out.tx.clone();
            out.spawn(async move {
                let result = call.await;
                let _ = tx.send(Input::Store(id, result)).await;
            });
            return;
        }
        Err(cmd) => cmd,
    };
    if out.store.blocks() {
        let store = out.store.clone();
        let tx = out.tx.clone();
        out.spawn(async move {
            let result = smol::unblock(move || store.execute(cmd)).await;
            let _ = tx.send(Input::Store(id, result)).await;
        });
    } else {
        let result = out.store.execute(cmd);
        server.handle_store_result(id, result, clock::now(), rng);
    }
}
