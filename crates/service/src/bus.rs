//! Telemetry from NATS JetStream. Sites (or NATS leaf nodes at the sites)
//! publish encoded `ReadingBatch` messages on `<subject_prefix>.<site>`; one
//! stream holds them and every replica pulls from one shared durable
//! consumer, so each message goes to one replica at a time (JetStream's
//! queue group). A replica acks a message only after its batch is durable
//! through [`super::telemetry::intake`] — the gRPC stream's own path — so a
//! replica that dies mid-batch leaves its messages unacked and JetStream
//! hands them to another after `ack_wait_s`. In cluster mode the store
//! keeps the key of every message logged (the stream, by name and creation
//! time, and the sequence) for as long as the stream holds the message: a
//! message delivered again after its batch was logged — the replica died
//! between the log and the ack, or the consumer was lost and created again
//! and starts over — is dropped, so a reading is counted once. Keys go when
//! their message has left the stream (below its first sequence, or a
//! stream of that name deleted since), which the consumer checks every
//! [`KEY_PRUNE_EVERY`]; streams created here keep messages
//! `stream_max_age_s`, which bounds both.
//!
//! A message that cannot be a batch (not a `ReadingBatch`, too many
//! readings, a site other than its subject's) is terminated — never
//! redelivered — and logged with its subject and sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::Shared;
use edgeplan_api::pb;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created if missing, on `<subject_prefix>.>`).
    pub stream: String,
    /// Sites publish on `<subject_prefix>.<site id>`.
    pub subject_prefix: String,
    /// The durable consumer every replica shares.
    pub consumer: String,
    /// Messages pulled and logged together.
    pub batch: usize,
    /// Unacked messages go to another replica after this long, s.
    pub ack_wait_s: f64,
    /// A stream created here keeps messages this long, s (a stream that
    /// exists keeps its own limits).
    pub stream_max_age_s: f64,
    /// TLS towards NATS (`ca` required; `cert` and `key` for a client
    /// certificate). Required when the server is off loopback.
    pub tls: Option<super::auth::ClientTls>,
    /// NATS user, with its password in `password_file` (never inline).
    pub user: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
}

impl BusConfig {
    /// Plaintext only to loopback; credentials whole. Checked at start.
    pub fn check_link(&self) -> anyhow::Result<()> {
        if self.user.is_some() != self.password_file.is_some() {
            anyhow::bail!("nats.user and nats.password_file go together");
        }
        if self.tls.is_some() {
            return Ok(());
        }
        let host = self
            .url
            .split("://")
            .last()
            .unwrap_or_default()
            .split(['/', ','])
            .next()
            .unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !super::auth::is_loopback_host(host) {
            anyhow::bail!(
                "nats.url {}: {host} is not loopback, and a plaintext link off loopback \
                 is refused: set nats.tls (its ca at least)",
                self.url
            );
        }
        Ok(())
    }

    /// Connect as configured: verified TLS and credentials when set; a
    /// plaintext link off loopback refused.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.check_link()?;
        let mut options = async_nats::ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .tls_client_config(tls.rustls_client("nats.tls")?);
        }
        match (&self.user, &self.password_file) {
            (Some(user), Some(path)) => {
                let password = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("nats.password_file {}: {e}", path.display()))?;
                options = options.user_and_password(user.clone(), password.trim().to_string());
            }
            (None, None) => {}
            _ => anyhow::bail!("nats.user and nats.password_file go together"),
        }
        options
            .connect(&self.url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach NATS at {}: {e}", self.url))
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "EDGEPLAN_TELEMETRY".into(),
            subject_prefix: "edgeplan.telemetry".into(),
            consumer: "edgeplan".into(),
            batch: 256,
            ack_wait_s: 10.0,
            stream_max_age_s: 86_400.0,
            tls: None,
            user: None,
            password_file: None,
        }
    }
}

/// Messages terminated as malformed since start (for logs and tests).
pub static TERMINATED: AtomicU64 = AtomicU64::new(0);

/// Consume until the service stops; reconnect after errors.
pub async fn run(shared: Arc<Shared>) {
    let Some(cfg) = shared.config.nats.clone() else {
        return;
    };
    loop {
        if let Err(e) = consume(&shared, &cfg).await {
            tracing::warn!(url = %cfg.url, "telemetry bus: {e:#}; retrying in 1 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The stream on `<subject_prefix>.>`, created if missing (by whichever
/// replica or publisher comes first; the others find it).
pub async fn stream(js: &jetstream::Context, cfg: &BusConfig) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        max_age: edgeplan_model::duration_s(cfg.stream_max_age_s),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("stream {}: {e}", cfg.stream))
}

/// The shared durable consumer, created if missing.
pub async fn consumer(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<consumer::PullConsumer> {
    consumer_of(&stream(js, cfg).await?, cfg).await
}

async fn consumer_of(
    stream: &stream::Stream,
    cfg: &BusConfig,
) -> anyhow::Result<consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            &cfg.consumer,
            consumer::pull::Config {
                durable_name: Some(cfg.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: edgeplan_model::duration_s(cfg.ack_wait_s.max(0.5)),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {}: {e}", cfg.consumer))
}

/// How often a consuming replica forgets the keys of messages that have
/// left the stream (cluster mode).
pub const KEY_PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A stream's creation time, which tells it from an earlier stream of its
/// name (whose sequences it reuses).
fn created(info: &stream::Info) -> String {
    info.created.unix_timestamp_nanos().to_string()
}

async fn consume(shared: &Arc<Shared>, cfg: &BusConfig) -> anyhow::Result<()> {
    let client = cfg.connect().await?;
    let js = jetstream::new(client);
    let mut stream = stream(&js, cfg).await?;
    let stream_created = created(stream.cached_info());
    let consumer = consumer_of(&stream, cfg).await?;
    tracing::info!(url = %cfg.url, stream = %cfg.stream, consumer = %cfg.consumer, "telemetry bus: consuming");
    let max = shared.config.max_batch_readings;
    let mut prune_at = tokio::time::Instant::now();
    loop {
        if shared.store.is_cluster() && tokio::time::Instant::now() >= prune_at {
            prune_at = tokio::time::Instant::now() + KEY_PRUNE_EVERY;
            let info = stream
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("stream {}: {e}", cfg.stream))?;
            if created(info) != stream_created {
                anyhow::bail!("stream {} was created again; starting over", cfg.stream);
            }
            let (s, name, at, first) = (
                shared.clone(),
                cfg.stream.clone(),
                stream_created.clone(),
                info.state.first_sequence,
            );
            let keep_s = shared.config.cluster.telemetry_keep_s;
            match tokio::task::spawn_blocking(move || {
                s.store.prune_bus_keys(&name, &at, first, keep_s)
            })
            .await
            {
                Ok(Ok(n)) => tracing::debug!(
                    pruned = n,
                    first,
                    "telemetry bus: keys of messages gone from the stream forgotten"
                ),
                Ok(Err(e)) => tracing::warn!("telemetry bus: cannot prune message keys: {e}"),
                Err(e) => tracing::warn!("telemetry bus: key pruning failed: {e}"),
            }
        }
        let mut pulled = consumer
            .batch()
            .max_messages(cfg.batch.max(1))
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        let mut messages = Vec::new();
        while let Some(m) = pulled.next().await {
            messages.push(m.map_err(|e| anyhow::anyhow!("pull: {e}"))?);
        }
        if messages.is_empty() {
            continue;
        }
        let mut batches = Vec::with_capacity(messages.len());
        let mut keep = Vec::with_capacity(messages.len());
        for m in messages {
            let (seq, site) = {
                let info = m.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
                let site = m
                    .subject
                    .as_str()
                    .strip_prefix(&cfg.subject_prefix)
                    .and_then(|s| s.strip_prefix('.'))
                    .unwrap_or("")
                    .to_string();
                let node = &shared.cluster;
                node.bus_messages.fetch_add(1, Ordering::Relaxed);
                if info.delivered > 1 {
                    node.bus_redelivered.fetch_add(1, Ordering::Relaxed);
                }
                (info.stream_sequence, site)
            };
            match check(&m.payload, &site, max) {
                Ok(batch) => {
                    let key = super::store::BusKey {
                        stream: cfg.stream.clone(),
                        created: stream_created.clone(),
                        seq,
                    };
                    let source = super::telemetry::Source {
                        batch_id: None,
                        bus: Some(key),
                    };
                    batches.push((source, batch));
                    keep.push(m);
                }
                Err(why) => {
                    TERMINATED.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(subject = %m.subject, seq, "telemetry bus: message dropped: {why}");
                    m.ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("term: {e}"))?;
                }
            }
        }
        // Durable first; an error leaves the messages unacked (redelivered).
        super::telemetry::intake(shared, batches, false)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        for m in keep {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
    }
}

/// A message as a batch of its subject's site, or why not.
pub fn check(payload: &[u8], site: &str, max_readings: usize) -> Result<pb::ReadingBatch, String> {
    if site.is_empty() || site.contains('.') {
        return Err("the subject names no single site".into());
    }
    let mut batch = pb::ReadingBatch::decode(payload)
        .map_err(|e| format!("not an encoded ReadingBatch: {e}"))?;
    if batch.readings.len() > max_readings {
        return Err(format!(
            "{} readings, at most {max_readings} per batch",
            batch.readings.len()
        ));
    }
    if batch.site.is_empty() {
        batch.site = site.to_string();
    }
    if batch.site != site {
        return Err(format!(
            "batch for site {} on site {site}'s subject",
            batch.site
        ));
    }
    if let Some(r) = batch
        .readings
        .iter()
        .find(|r| !r.site.is_empty() && r.site != site)
    {
        return Err(format!(
            "reading {} names site {} on site {site}'s subject",
            r.device_id, r.site
        ));
    }
    Ok(batch)
}
