//! `provisioner-sim`: a reference provisioner. It "executes" a step by
//! waiting its expected duration, honours idempotency keys (a repeated key
//! gets the first outcome, waiting for it if the step is still running),
//! can fail chosen workloads' steps or a random share of them, and appends
//! every real execution to a journal file, which it also reads back at
//! start so that idempotency survives its own restarts.
//!
//! It is fenced (the proto's contract): it keeps the highest fencing token
//! it has seen, in the journal so that a restart keeps it too, and refuses
//! a call with a lower one without running it.
//!
//! For fault tests it injects what real provisioners do ([`Faults`]):
//! transient errors, answers that never come (the step ran, the ack is lost),
//! slow answers, duplicate acks, and dying mid-step.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use edgeplan_api::pb;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Steps of these workloads fail.
    pub fail_workloads: Vec<String>,
    /// Share of other steps that fail (0–1).
    pub fail_rate: f64,
    pub seed: u64,
    /// Every executed step, one line each (key, workload, kind, from, to, outcome).
    pub journal: Option<PathBuf>,
    /// Multiplier on the expected duration.
    pub speed: f64,
    /// Serve TLS (mutual with `client_ca`).
    pub tls: Option<super::auth::ServerTls>,
    pub faults: Faults,
}

/// Injected faults; each rate is a share of calls (0–1), drawn from the seed.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer UNAVAILABLE without executing.
    pub error_rate: f64,
    /// Execute, then never answer (the caller's deadline passes; its retry
    /// gets the first outcome through the idempotency key).
    pub timeout_rate: f64,
    /// Answer after an extra delay of up to twice the step's expected time.
    pub slow_rate: f64,
    /// Flag a first answer as a duplicate.
    pub duplicate_rate: f64,
    /// Exit the process (connections drop) right after journaling this
    /// many executions, before answering the last one.
    pub exit_after: Option<u64>,
    /// Append every call (key, what was done with it) here.
    pub call_log: Option<PathBuf>,
}

enum Slot {
    Running(watch::Receiver<Option<pb::StepResult>>),
    Done(pb::StepResult),
}

pub struct Sim {
    config: SimConfig,
    executed: std::sync::atomic::AtomicU64,
    call_log: Option<Mutex<std::fs::File>>,
    slots: Mutex<HashMap<String, Slot>>,
    /// The highest fencing token seen; held while a call is admitted, so
    /// that a refusal and a raise cannot interleave.
    highest_token: Mutex<u64>,
    journal: Option<Mutex<std::fs::File>>,
    rng: Mutex<rand_chacha::ChaCha8Rng>,
}

impl Sim {
    pub fn new(config: SimConfig) -> std::io::Result<Sim> {
        let mut slots = HashMap::new();
        let mut highest_token = 0;
        let journal = match &config.journal {
            Some(path) => {
                if let Ok(text) = std::fs::read_to_string(path) {
                    for line in text.lines() {
                        let f: Vec<&str> = line.split('\t').collect();
                        if let (2, Some(&"fence")) = (f.len(), f.first()) {
                            highest_token = highest_token.max(f[1].parse().unwrap_or(0));
                        } else if f.len() >= 6 {
                            let outcome = if f[5] == "succeeded" {
                                pb::Outcome::Succeeded
                            } else {
                                pb::Outcome::Failed
                            };
                            slots.insert(
                                f[0].to_string(),
                                Slot::Done(pb::StepResult {
                                    idempotency_key: f[0].to_string(),
                                    outcome: outcome as i32,
                                    message: "from the journal".into(),
                                    duplicate: false,
                                }),
                            );
                        }
                    }
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                ))
            }
            None => None,
        };
        let call_log = match &config.faults.call_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Sim {
            executed: std::sync::atomic::AtomicU64::new(0),
            call_log,
            rng: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(config.seed)),
            config,
            slots: Mutex::new(slots),
            highest_token: Mutex::new(highest_token),
            journal,
        })
    }

    /// Admit a call with this fencing token: refused when lower than the
    /// highest seen; a higher one is journaled before it is admitted.
    fn admit(&self, token: u64, who: &str) -> Result<u64, Status> {
        let mut highest = self
            .highest_token
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        if token < *highest {
            return Err(Status::failed_precondition(format!(
                "fenced: {who} carries fencing token {token}, lower than {} already seen; \
                 a newer leader dispatches now",
                *highest
            )));
        }
        if token > *highest {
            if let Some(j) = &self.journal {
                let mut f = j.lock().map_err(|_| Status::internal("poisoned"))?;
                writeln!(f, "fence\t{token}")
                    .and_then(|()| f.sync_data())
                    .map_err(|e| Status::unavailable(format!("cannot journal the fence: {e}")))?;
            }
            *highest = token;
        }
        Ok(*highest)
    }

    /// True with probability `rate`.
    fn draw(&self, rate: f64) -> bool {
        rate > 0.0
            && self
                .rng
                .lock()
                .map(|mut r| r.random::<f64>() < rate)
                .unwrap_or(false)
    }

    fn log_call(&self, key: &str, what: &str) {
        if let Some(log) = &self.call_log {
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "{key}\t{what}");
                let _ = f.sync_data();
            }
        }
    }

    async fn run_step(&self, req: &pb::StepRequest) -> pb::StepResult {
        // From the request: NaN or ∞ must not panic the simulator.
        let wait = edgeplan_model::duration_s(req.expected_duration_s * self.config.speed)
            .min(Duration::from_secs(3600))
            .as_secs_f64();
        tokio::time::sleep(edgeplan_model::duration_s(wait)).await;
        let fail = self.config.fail_workloads.contains(&req.workload)
            || self
                .rng
                .lock()
                .map(|mut r| r.random::<f64>() < self.config.fail_rate)
                .unwrap_or(false);
        let kind = pb::StepKind::try_from(req.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("STEP_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        let outcome = if fail { "failed" } else { "succeeded" };
        if let Some(j) = &self.journal {
            if let Ok(mut f) = j.lock() {
                let _ = writeln!(
                    f,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    req.idempotency_key,
                    req.workload,
                    kind,
                    req.from_site,
                    req.to_site,
                    outcome,
                    req.fencing_token
                );
                let _ = f.sync_data();
            }
        }
        let executed = self
            .executed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if self.config.faults.exit_after == Some(executed) {
            // Journaled but unanswered: the caller sees the connection drop.
            eprintln!("provisioner-sim: injected exit after {executed} executions");
            std::process::exit(3);
        }
        pb::StepResult {
            idempotency_key: req.idempotency_key.clone(),
            outcome: if fail {
                pb::Outcome::Failed
            } else {
                pb::Outcome::Succeeded
            } as i32,
            message: if fail {
                format!("simulated failure of {kind} {}", req.workload)
            } else {
                format!("{kind} {} done in {wait:.2} s", req.workload)
            },
            duplicate: false,
        }
    }
}

pub struct SimApi(pub Arc<Sim>);

#[tonic::async_trait]
impl pb::provisioner_server::Provisioner for SimApi {
    async fn execute(
        &self,
        req: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResult>, Status> {
        let req = req.into_inner();
        if req.idempotency_key.is_empty() {
            return Err(Status::invalid_argument("idempotency_key: required"));
        }
        let sim = &self.0;
        let faults = &sim.config.faults;
        if sim.draw(faults.error_rate) {
            sim.log_call(&req.idempotency_key, "error");
            return Err(Status::unavailable(
                "injected fault: provisioner unavailable",
            ));
        }
        let (lose, slow, dup) = (
            sim.draw(faults.timeout_rate),
            sim.draw(faults.slow_rate),
            sim.draw(faults.duplicate_rate),
        );
        let mut answer = self.answer(&req).await?;
        if lose {
            // The step ran (or is running); this answer never arrives.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if slow {
            let extra = 2.0 * req.expected_duration_s * sim.config.speed;
            tokio::time::sleep(edgeplan_model::duration_s(extra).min(Duration::from_secs(600)))
                .await;
        }
        answer.get_mut().duplicate |= dup;
        Ok(answer)
    }

    async fn fence(
        &self,
        req: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceReply>, Status> {
        let req = req.into_inner();
        let highest = self
            .0
            .admit(req.fencing_token, &req.holder)
            .inspect_err(|_| {
                self.0
                    .log_call(&req.holder, &format!("fenced\t{}", req.fencing_token))
            })?;
        self.0
            .log_call(&req.holder, &format!("fence\t{}", req.fencing_token));
        Ok(Response::new(pb::FenceReply { highest }))
    }
}

impl SimApi {
    /// The step's outcome: the first one for a key seen before, else run it.
    async fn answer(&self, req: &pb::StepRequest) -> Result<Response<pb::StepResult>, Status> {
        let (rx, duplicate) = {
            let mut slots = self
                .0
                .slots
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            // Admitted under the slots' lock: a Fence that raises the token
            // lands before this call (refused) or after its step started.
            let token = req.fencing_token;
            if let Err(refused) = self.0.admit(token, &req.idempotency_key) {
                self.0
                    .log_call(&req.idempotency_key, &format!("fenced\t{token}"));
                return Err(refused);
            }
            self.0
                .log_call(&req.idempotency_key, &format!("call\t{token}"));
            match slots.get(&req.idempotency_key) {
                Some(Slot::Done(r)) => {
                    let mut r = r.clone();
                    r.duplicate = true;
                    return Ok(Response::new(r));
                }
                Some(Slot::Running(rx)) => (rx.clone(), true),
                None => {
                    let (tx, rx) = watch::channel(None);
                    slots.insert(req.idempotency_key.clone(), Slot::Running(rx.clone()));
                    // Run detached, so a caller that gives up does not stop the step.
                    let sim = self.0.clone();
                    let r = req.clone();
                    tokio::spawn(async move {
                        let result = sim.run_step(&r).await;
                        if let Ok(mut slots) = sim.slots.lock() {
                            slots.insert(r.idempotency_key.clone(), Slot::Done(result.clone()));
                        }
                        let _ = tx.send(Some(result));
                    });
                    (rx, false)
                }
            }
        };
        wait_for(rx, duplicate).await
    }
}

async fn wait_for(
    mut rx: watch::Receiver<Option<pb::StepResult>>,
    duplicate: bool,
) -> Result<Response<pb::StepResult>, Status> {
    let r = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| Status::unavailable("step runner stopped"))?
        .clone()
        .ok_or_else(|| Status::internal("no result"))?;
    Ok(Response::new(pb::StepResult { duplicate, ..r }))
}

/// Serve the simulator until `shutdown` resolves.
pub async fn serve_on(
    config: SimConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
    let sim = Arc::new(Sim::new(config)?);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(pb::provisioner_server::ProvisionerServer::new(SimApi(sim)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}
