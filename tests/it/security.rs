//! Security over real loopback: TLS and mutual TLS (server and provisioner),
//! bearer tokens with roles at every boundary, message-size and stream-rate
//! limits, and no secret in the logs. Certificates are made here (rcgen).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeplan::api::convert;
use edgeplan::api::pb;
use edgeplan::api::pb::inventory_client::InventoryClient;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::api::pb::provisioner_client::ProvisionerClient;
use edgeplan::api::pb::telemetry_client::TelemetryClient;
use edgeplan::instance::Instance;
use edgeplan::service::auth::{new_token, token_sha256, ClientTls};
use edgeplan::service::client::{push_instance, Connect};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::Code;

use crate::live::*;

/// PEM files: a CA, a server certificate for localhost and a client
/// certificate it signed, and a client certificate from another CA.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = |cn: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let leaf = |issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let fleet_ca = ca("edgeplan test CA");
    let other_ca = ca("someone else's CA");
    let (server_cert, server_key) = leaf(&fleet_ca, &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = leaf(&fleet_ca, &["operator"]);
    let (rogue_cert, rogue_key) = leaf(&other_ca, &["operator"]);
    Pki {
        ca: write("ca.pem", fleet_ca.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
        rogue_cert: write("rogue.pem", rogue_cert),
        rogue_key: write("rogue.key", rogue_key),
    }
}

impl Pki {
    /// How a client with our certificate (or none, or the rogue one) connects.
    fn client(&self, cert: Option<(&Path, &Path)>) -> ClientTls {
        ClientTls {
            ca: Some(self.ca.clone()),
            cert: cert.map(|c| c.0.to_path_buf()),
            key: cert.map(|c| c.1.to_path_buf()),
            domain: None,
        }
    }
    fn ours(&self) -> Option<(&Path, &Path)> {
        Some((&self.client_cert, &self.client_key))
    }
}

/// The four calls that stand for the four kinds of access.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    Read,
    Ingest,
    Solve,
    Upsert,
}

const CALLS: [Call; 4] = [Call::Read, Call::Ingest, Call::Solve, Call::Upsert];

async fn call(conn: &Connect, inst: &Instance, what: Call) -> Result<(), tonic::Status> {
    let channel = conn
        .channel()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    match what {
        Call::Read => {
            InventoryClient::new(channel)
                .get_inventory(pb::GetInventoryRequest::default())
                .await?;
        }
        Call::Ingest => {
            TelemetryClient::new(channel)
                .ingest(tokio_stream::iter(vec![ambient_batch(inst, now_s(), None)]))
                .await?;
        }
        Call::Solve => {
            PlacementClient::new(channel)
                .solve(pb::SolveRequest {
                    time_limit_s: Some(2.0),
                    dry_run: true,
                    ..Default::default()
                })
                .await?;
        }
        Call::Upsert => {
            InventoryClient::new(channel)
                .upsert_sites(pb::UpsertSitesRequest {
                    sites: vec![convert::site_to_pb(&inst.sites[0])],
                    expected_version: None,
                })
                .await?;
        }
    }
    Ok(())
}

/// Readings for one site's many outdoor probes, `n` of them.
fn probes(site: &str, from: usize, n: usize) -> pb::ReadingBatch {
    pb::ReadingBatch {
        site: site.to_string(),
        timestamp_s: now_s(),
        readings: (from..from + n)
            .map(|i| pb::Reading {
                device_id: format!("{site}/probe-{i}"),
                device_type: pb::DeviceType::Temperature as i32,
                placement: pb::DevicePlacement::Outside as i32,
                value: 21.5,
                ..Default::default()
            })
            .collect(),
    }
}

#[test]
fn tls_tokens_and_roles_guard_every_boundary_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let tokens: Vec<(&str, &str, String)> = vec![
        ("ops-ro", "read-only", new_token()),
        ("gateway", "telemetry-writer", new_token()),
        ("planner", "planner", new_token()),
        ("root", "admin", new_token()),
    ];
    let token_yaml: String = tokens
        .iter()
        .map(|(name, role, t)| {
            format!(
                "    - {{ name: {name}, role: {role}, sha256: {} }}\n",
                token_sha256(t)
            )
        })
        .collect();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert: {}\n  key: {}\n  client_ca: {}\nauth:\n  tokens:\n{token_yaml}\
             max_message_bytes: 65536\nmax_ingest_readings_per_s: 1000\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let srv = Proc::start_with(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("EDGEPLAN_LOG", "trace")],
    );
    let url = format!("https://localhost:{}", srv.port());
    let with = |token: Option<&str>| Connect {
        url: url.clone(),
        token: token.map(str::to_string),
        tls: Some(pki.client(pki.ours())),
    };
    let token = |role: &str| tokens.iter().find(|t| t.1 == role).unwrap().2.as_str();
    let inst = fleet(3);
    let wrong = "not-a-token-0123456789abcdef";

    // The CLI makes a token whose config entry holds only its hash.
    let made = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["token", "--name", "ci", "--role", "planner"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let made_token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let entry = String::from_utf8(made.stderr).unwrap();
    assert!(entry.contains(&token_sha256(&made_token)), "{entry}");
    assert!(
        !entry.contains(&made_token),
        "the entry must not hold the token"
    );

    // The CLI registers the fleet over mutual TLS with the admin token …
    let fleet_file = dir.path().join("fleet.json");
    std::fs::write(&fleet_file, serde_json::to_string(&inst).unwrap()).unwrap();
    let push = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_edgeplan"))
            .args(["push", "--server", &url, "--instance"])
            .arg(&fleet_file)
            .arg("--ca-cert")
            .arg(&pki.ca)
            .arg("--client-cert")
            .arg(&pki.client_cert)
            .arg("--client-key")
            .arg(&pki.client_key)
            .env("EDGEPLAN_TOKEN", token)
            .output()
            .unwrap()
    };
    let pushed = push(token("admin"));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    // … and is refused, with the holder named, for a read-only one.
    let refused = push(token("read-only"));
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("ops-ro") && why.contains("read-only") && why.contains("UpsertSites"),
        "{why}"
    );

    rt().block_on(async {
        // Every role against every kind of call.
        let allowed = |role: &str, c: Call| match role {
            "admin" => true,
            "planner" => matches!(c, Call::Read | Call::Solve),
            "read-only" => c == Call::Read,
            "telemetry-writer" => c == Call::Ingest,
            _ => unreachable!(),
        };
        for (name, role, t) in &tokens {
            for c in CALLS {
                let got = call(&with(Some(t)), &inst, c).await;
                if allowed(role, c) {
                    assert!(got.is_ok(), "{name} ({role}) {c:?}: {got:?}");
                } else {
                    let e = got.expect_err(&format!("{name} ({role}) may not {c:?}"));
                    assert_eq!(e.code(), Code::PermissionDenied, "{name} {c:?}: {e:?}");
                    assert!(e.message().contains(name), "{e:?}");
                }
            }
        }
        for c in CALLS {
            for t in [None, Some(wrong)] {
                let e = call(&with(t), &inst, c).await.unwrap_err();
                assert_eq!(e.code(), Code::Unauthenticated, "{t:?} {c:?}: {e:?}");
            }
        }
        // Health is open: load balancers probe without credentials.
        let mut health =
            tonic_health::pb::health_client::HealthClient::new(with(None).channel().await.unwrap());
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health without a token");

        // Mutual TLS: no client certificate, another CA's, or plaintext: no call.
        for tls in [
            Some(pki.client(None)),
            Some(pki.client(Some((&pki.rogue_cert, &pki.rogue_key)))),
            None,
        ] {
            let conn = Connect {
                url: if tls.is_some() {
                    url.clone()
                } else {
                    format!("http://{}", srv.addr)
                },
                token: Some(token("admin").to_string()),
                tls,
            };
            let e = call(&conn, &inst, Call::Read).await.unwrap_err();
            assert!(
                !matches!(e.code(), Code::PermissionDenied | Code::Ok),
                "{e:?}"
            );
        }

        // A message over max_message_bytes is refused; the server goes on.
        let writer = with(Some(token("telemetry-writer")));
        let mut t = TelemetryClient::new(writer.channel().await.unwrap());
        let big = probes(&inst.sites[0].id, 0, 5_000);
        let e = t.ingest(tokio_stream::iter(vec![big])).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{e:?}"
        );
        call(&writer, &inst, Call::Ingest)
            .await
            .expect("still serving");

        // A stream over max_ingest_readings_per_s is slowed to the limit,
        // and all of it is taken.
        let batches: Vec<pb::ReadingBatch> = (0..5)
            .map(|k| probes(&inst.sites[1].id, k * 400, 400))
            .collect();
        let started = Instant::now();
        let summary = t
            .ingest(tokio_stream::iter(batches))
            .await
            .unwrap()
            .into_inner();
        let took = started.elapsed();
        assert_eq!(summary.accepted, 2_000, "{summary:?}");
        assert!(
            took >= Duration::from_millis(1_500),
            "2,000 readings at 1,000/s took {took:?}"
        );
    });

    // Secrets never reach the log, though it was at trace and saw refusals.
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("refused"), "the log shows refusals");
    for (name, _, t) in &tokens {
        assert!(!log.contains(t.as_str()), "{name}'s token is in the log");
    }
    assert!(!log.contains(wrong), "a wrong token is in the log");
    assert!(!log.contains(&made_token));
}

#[test]
fn steps_reach_the_provisioner_over_mutual_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let journal = dir.path().join("journal.tsv");
    let sim = sim(
        &journal,
        &[
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
            "--client-ca",
            pki.ca.to_str().unwrap(),
        ],
    );
    let sim_url = format!("https://localhost:{}", sim.port());
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "provisioner_tls:\n  ca: {}\n  cert: {}\n  key: {}\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    let srv = server(
        &dir.path().join("data"),
        &sim_url,
        &[
            "--config",
            config.to_str().unwrap(),
            "--time-scale",
            "0.002",
        ],
    );
    let inst = fleet(3);
    rt().block_on(async {
        // Without our client certificate the provisioner takes no step.
        let bare = Connect {
            url: sim_url.clone(),
            token: None,
            tls: Some(pki.client(None)),
        };
        let refused = match bare.channel().await {
            Err(_) => true,
            Ok(ch) => ProvisionerClient::new(ch)
                .execute(pb::StepRequest {
                    idempotency_key: "intruder/0".into(),
                    ..Default::default()
                })
                .await
                .is_err(),
        };
        assert!(refused, "a client without a certificate was served");

        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let (plan_id, steps) = solve_and_approve(&srv.url()).await;
        assert!(steps > 0, "the fleet needs moves for this test");
        let (end, _) = watch_to_end(&srv.url(), plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
    });
    let counts = journal_counts(&journal);
    assert!(!counts.contains_key("intruder/0"));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[test]
fn a_bad_security_setting_stops_the_start_and_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "auth:\n  tokens:\n    - { name: gw, role: telemetry-writer, sha256: abc }\n",
            "auth.tokens[0] (gw)",
        ),
        (
            "auth:\n  tokens:\n    - { name: gw, role: superuser, sha256: abc }\n",
            "superuser",
        ),
        (
            "tls:\n  cert: /nonexistent/server.pem\n  key: /nonexistent/server.key\n",
            "/nonexistent/server.pem",
        ),
        (
            "provisioner_tls:\n  ca: /nonexistent/ca.pem\n",
            "/nonexistent/ca.pem",
        ),
    ];
    for (i, (yaml, named)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let data = dir.path().join(format!("data-{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} started");
        assert!(err.contains(named), "{yaml}: {err}");
    }
}

/// A site gateway's token writes its own sites' readings only: a reading
/// for another site is rejected (`site_not_allowed`), counted in the
/// summary, the ack and `/metrics`, and never reaches the state. Tokens in
/// `auth.tokens_file` are rotated without a restart: the new one works and
/// the old one is refused within seconds; a broken file is refused by name
/// and the tokens in force stay.
#[test]
fn a_gateway_token_writes_only_its_sites_and_tokens_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inst = fleet(1);
    let (a, b) = (inst.sites[0].id.clone(), inst.sites[1].id.clone());
    let (gw_old, gw_new, admin) = (new_token(), new_token(), new_token());
    let tokens_file = dir.path().join("tokens.yaml");
    let write_tokens = |gw: &str| {
        // Written whole, then renamed: the reload never sees half a file.
        let tmp = dir.path().join("tokens.yaml.tmp");
        std::fs::write(
            &tmp,
            format!(
                "tokens:\n  - {{ name: gw-a, role: telemetry-writer, sha256: {}, sites: [{a}] }}\n",
                token_sha256(gw)
            ),
        )
        .unwrap();
        std::fs::rename(&tmp, &tokens_file).unwrap();
    };
    write_tokens(&gw_old);
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  tokens:\n    - {{ name: ops, role: admin, sha256: {} }}\n  tokens_file: {}\n",
            token_sha256(&admin),
            tokens_file.display()
        ),
    )
    .unwrap();
    let http_port = free_port().to_string();
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--http",
        &format!("127.0.0.1:{http_port}"),
    ]);
    let with = |token: &str| Connect {
        url: srv.url(),
        token: Some(token.to_string()),
        tls: None,
    };
    let batch = ambient_batch(&inst, now_s(), None);
    let ingest = |token: String| {
        let batch = batch.clone();
        let conn = with(&token);
        async move {
            let mut t = TelemetryClient::new(conn.channel().await.unwrap());
            t.ingest(tokio_stream::iter(vec![batch])).await
        }
    };
    rt().block_on(async {
        push_instance(&with(&admin), &inst).await.unwrap();
        let summary = ingest(gw_old.clone()).await.unwrap().into_inner();
        assert_eq!(summary.accepted, 1, "only {a}'s reading: {summary:?}");
        assert_eq!(summary.rejected as usize, inst.sites.len() - 1);
        assert_eq!(
            summary.rejected_by_reason.get("site_not_allowed").copied(),
            Some(summary.rejected),
            "{summary:?}"
        );
        assert!(summary
            .examples
            .iter()
            .any(|e| e.device_id == format!("{b}/outside")));
        // The acked stream keeps the same rule.
        let conn = with(&gw_old);
        let mut t = TelemetryClient::new(conn.channel().await.unwrap());
        let mut acks = t
            .ingest_acked(tokio_stream::iter(vec![pb::IngestBatch {
                batch_id: "b1".into(),
                batch: Some(ambient_batch(&inst, now_s() + 1.0, None)),
            }]))
            .await
            .unwrap()
            .into_inner();
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(
            (ack.accepted, ack.rejected as usize),
            (1, inst.sites.len() - 1),
            "{ack:?}"
        );
        // Nothing of another site reached the state; the refusals are counted.
        let metrics = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{http_port}/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let refused = format!(
            "edgeplan_readings_rejected_total{{reason=\"site_not_allowed\"}} {}",
            2 * (inst.sites.len() - 1)
        );
        assert!(metrics.contains(&refused), "{refused} not in:\n{metrics}");
        assert!(
            metrics.contains("edgeplan_readings_accepted_total 2"),
            "{metrics}"
        );

        // Rotation: the file now holds the new token only.
        write_tokens(&gw_new);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let old = ingest(gw_old.clone()).await;
            let new = ingest(gw_new.clone()).await;
            if matches!(&old, Err(e) if e.code() == Code::Unauthenticated) && new.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new token was not taken up: {old:?} {new:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A broken file: refused, the table in force stays.
        std::fs::write(&tokens_file, "tokens:\n  - { name: gw-a, role: root }\n").unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            ingest(gw_new.clone()).await.is_ok(),
            "a broken file dropped the tokens in force"
        );
        assert!(ingest(admin.clone()).await.is_ok());
    });
    let log = srv.log.lock().unwrap().join("\n");
    assert!(
        log.contains("auth.tokens_file"),
        "the refusal names the file: {log}"
    );
    assert!(
        !log.contains(&gw_new) && !log.contains(&gw_old),
        "a token was logged"
    );
}

/// The cluster's links over verified TLS: PostgreSQL (a server of the
/// test's own with `ssl = on` and the test CA's certificate) and NATS
/// (nats-server with TLS and a user and password). Every store connection
/// is encrypted (`pg_stat_ssl`), a reading published over TLS arrives, a
/// certificate from another CA fails the start by name, and a plaintext
/// link off loopback is refused before anything connects.
#[test]
fn the_store_and_the_bus_are_reached_over_verified_tls_only() {
    use crate::cluster_faults::Servers;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_pki = self::pki(other.path());
    let servers = Servers::start();
    // PostgreSQL: its key readable by it alone, then TLS on.
    let pg_dir = servers.dir.join("pg");
    for (from, to) in [
        (&pki.server_cert, "server.crt"),
        (&pki.server_key, "server.key"),
    ] {
        let dest = pg_dir.join(to);
        std::fs::copy(from, &dest).unwrap();
        let mut chown = Command::new("chown");
        if nix_root() {
            assert!(chown
                .args(["postgres", dest.to_str().unwrap()])
                .status()
                .unwrap()
                .success());
        }
        assert!(Command::new("chmod")
            .args(["600", dest.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
    }
    let admin = format!("postgres://postgres@{}/postgres", servers.pg);
    pg_query(&admin, "ALTER SYSTEM SET ssl = on");
    pg_query(&admin, "SELECT pg_reload_conf()");
    // NATS: TLS and a user, on a port of its own.
    let nats_port = free_port();
    let nats_conf = dir.path().join("nats.conf");
    std::fs::write(
        &nats_conf,
        format!(
            "listen: 127.0.0.1:{nats_port}\njetstream {{ store_dir: {} }}\n\
             tls {{ cert_file: {}, key_file: {} }}\n\
             authorization {{ user: edgeplan, password: s3cret-bus }}\n",
            dir.path().join("js").display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let nats_log = dir.path().join("nats.log");
    let nats = KillOnDrop(
        Command::new("nats-server")
            .args([
                "-c",
                nats_conf.to_str().unwrap(),
                "-l",
                nats_log.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&nats_log)
        .unwrap_or_default()
        .contains("Server is ready")
    {
        assert!(
            Instant::now() < deadline,
            "nats-server with TLS did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let password = dir.path().join("nats.password");
    std::fs::write(&password, "s3cret-bus\n").unwrap();
    let config = |ca: &Path| {
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            format!(
                "store_tls: {{ ca: {ca} }}\n\
                 nats:\n  url: nats://localhost:{nats_port}\n  stream: TLS_TEST\n  \
                 subject_prefix: tlstest\n  tls: {{ ca: {ca} }}\n  user: edgeplan\n  \
                 password_file: {pw}\n",
                ca = ca.display(),
                pw = password.display()
            ),
        )
        .unwrap();
        path
    };
    let store = format!(
        "postgres://postgres@localhost:{}/postgres",
        servers.pg.rsplit(':').next().unwrap()
    );
    let serve = |cfg: &Path, store: &str| {
        // Bounded: a start that wrongly succeeds would serve forever.
        Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_edgeplan")])
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--config", cfg.to_str().unwrap(), "--store", store])
            .env("EDGEPLAN_LOG", "edgeplan=info")
            .output()
            .unwrap()
    };
    // Another CA's certificate: the start fails, naming the store.
    let refused = serve(&config(&other_pki.ca), &store);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("PostgreSQL") || err.contains("store"), "{err}");
    // Plaintext off loopback: refused before any connection.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "{}\n").unwrap();
    let off = serve(&plain, "postgres://postgres@192.0.2.10:5432/edgeplan");
    let err = String::from_utf8_lossy(&off.stderr);
    assert!(
        err.contains("192.0.2.10 is not loopback") && err.contains("store_tls"),
        "{err}"
    );
    std::fs::write(&plain, "nats: { url: \"nats://192.0.2.10:4222\" }\n").unwrap();
    let off = serve(&plain, "");
    let err = String::from_utf8_lossy(&off.stderr);
    assert!(
        err.contains("nats.url") && err.contains("nats.tls"),
        "{err}"
    );

    // The right CA: serving, every store connection encrypted, a reading over the bus in.
    let cfg = config(&pki.ca);
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data2").to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--store",
        &store,
    ]);
    let inst = fleet(2);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
    });
    // Serving (the inventory stored): every connection is open by now.
    let encrypted = pg_query(
        &admin,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.backend_type = 'client backend'",
    );
    let n: usize = encrypted[0][0].as_deref().unwrap().parse().unwrap();
    let all = pg_query(
        &admin,
        "SELECT s.ssl, a.client_addr, a.state, a.query FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend'",
    );
    assert!(
        n >= 3,
        "edgeplan's three store connections are TLS: {n} of {all:?}"
    );
    rt().block_on(async {
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .user_and_password("edgeplan".into(), "s3cret-bus".into())
            .connect(format!("nats://localhost:{nats_port}"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let site = &inst.sites[0].id;
        let mut batch = ambient_batch(&inst, now_s(), None);
        batch.readings.retain(|r| &r.site == site);
        use prost::Message;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The stream exists once edgeplan's consumer is up.
            if let Ok(ack) = js
                .publish(format!("tlstest.{site}"), batch.encode_to_vec().into())
                .await
            {
                if ack.await.is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "never published over TLS");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = connect(&srv.url(), TelemetryClient::new)
                .await
                .stats(pb::TelemetryStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if s.accepted >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the bus reading never arrived: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let log = srv.log.lock().unwrap().join("\n");
    assert!(!log.contains("s3cret-bus"), "the NATS password was logged");
    drop((srv, nats));
}

/// A child process stopped when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
