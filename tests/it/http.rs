//! The HTTP port (`serve --http`): Prometheus metrics scraped by a real
//! Prometheus, the JSON status, the live operator report — all from the
//! state the solver plans with (the inventory made effective by
//! telemetry) — and its rules off loopback (TLS and a token that may read).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeplan::api::pb;
use edgeplan::api::pb::inventory_client::InventoryClient;
use edgeplan::api::pb::telemetry_client::TelemetryClient;
use edgeplan::service::auth::{new_token, token_sha256};
use edgeplan::service::client::{push_instance, Connect};

use crate::live::*;

/// The HTTP address the server printed before it listened.
fn http_addr(p: &Proc) -> String {
    let log = p.log.lock().unwrap();
    log.iter()
        .find_map(|l| {
            l.split("edgeplan HTTP on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no HTTP line in {log:?}"))
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

/// Samples of a metric family by their label text, e.g. `{site="a"}`.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let labels = key.strip_prefix(name)?;
            (labels.is_empty() || labels.starts_with('{'))
                .then(|| (labels.to_string(), value.parse().unwrap()))
        })
        .collect()
}

#[test]
fn metrics_status_and_the_live_report_show_what_the_sensors_say() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--http", "127.0.0.1:0", "--time-scale", "0.002"],
    );
    let base = http_addr(&srv);
    let url = srv.url();
    let inst = fleet(3);
    let hot = inst.sites[0].id.clone();
    assert!(inst.sites[0].ambient.current_c < 40.0);
    rt().block_on(async {
        // Nothing registered yet: the report says so, metrics still answer.
        let (code, _, body) = get(&base).await;
        assert_eq!(code, 503, "{body}");
        let (code, _, _) = get(&format!("{base}metrics")).await;
        assert_eq!(code, 200);

        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        // A heat wave seen only in telemetry: 44 °C outside the first site.
        let mut tel = connect(&url, TelemetryClient::new).await;
        let batch = ambient_batch(&inst, now_s(), Some((&hot, 44.0)));
        let sent = batch.readings.len() as f64;
        tel.ingest(tokio_stream::iter(vec![batch])).await.unwrap();

        let (code, kind, text) = get(&format!("{base}metrics")).await;
        assert_eq!(code, 200);
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(samples(&text, "edgeplan_readings_accepted_total")[""], sent);
        let ambient = samples(&text, "edgeplan_site_ambient_c");
        assert_eq!(ambient[&format!("{{site=\"{hot}\"}}")], 44.0, "{text}");
        assert_eq!(ambient.len(), inst.sites.len());
        for family in [
            "edgeplan_site_power_headroom_kw",
            "edgeplan_site_cooling_headroom_kw",
            "edgeplan_site_inlet_headroom_c",
        ] {
            assert_eq!(samples(&text, family).len(), inst.sites.len(), "{family}");
        }
        let leader = samples(&text, "edgeplan_leader");
        assert_eq!(leader.values().copied().collect::<Vec<_>>(), vec![1.0]);
        assert_eq!(samples(&text, "edgeplan_solve_seconds_count")[""], 0.0);

        let (_, kind, body) = get(&format!("{base}status")).await;
        assert_eq!(kind, "application/json");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let site = status["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == hot.as_str())
            .unwrap();
        assert_eq!(site["ambient_c"], 44.0);
        assert!(status["latest_plan"].is_null());
        let revision = status["revision"].as_str().unwrap().to_string();

        // The same effective state through the API and `report --server`;
        // the declared inventory is untouched.
        let mut inv = connect(&url, InventoryClient::new).await;
        let effective = inv
            .get_inventory(pb::GetInventoryRequest {
                effective: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let eff: edgeplan::instance::Instance =
            serde_json::from_str(&effective.instance_json).unwrap();
        assert_eq!(eff.sites[0].ambient.current_c, 44.0);
        let declared = inventory(&url).await;
        assert_eq!(
            declared.sites[0].ambient.current_c,
            inst.sites[0].ambient.current_c
        );
        let err = inv
            .get_inventory(pb::GetInventoryRequest {
                effective: true,
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("effective"), "{}", err.message());

        let (code, kind, page) = get(&base).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(kind, "text/html; charset=utf-8");
        assert!(page.contains("edgeplan live"));
        assert!(page.contains("<td>44.0</td>"), "outside air not shown");
        assert!(page.contains("no plan yet"));
        // Self-contained: nothing fetched from elsewhere.
        for bad in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(!page.contains(bad), "external fetch: {bad}");
        }

        // A solve and its plan: the revision moves, the page names the plan,
        // the histogram counts the solve.
        let (plan_id, steps) = solve_and_approve(&url).await;
        assert!(steps > 0);
        watch_to_end(&url, plan_id, Duration::from_secs(60)).await;
        let (_, _, body) = get(&format!("{base}status")).await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_ne!(status["revision"].as_str().unwrap(), revision);
        assert_eq!(status["latest_plan"]["plan_id"], plan_id);
        assert_eq!(status["latest_plan"]["state"], "succeeded");
        let (_, _, text) = get(&format!("{base}metrics")).await;
        assert_eq!(samples(&text, "edgeplan_solve_seconds_count")[""], 1.0);
        assert_eq!(
            samples(&text, "edgeplan_plans")["{state=\"succeeded\"}"],
            1.0
        );
        let (_, _, page) = get(&base).await;
        assert!(
            page.contains(&format!("plan {plan_id} succeeded")),
            "plan not shown"
        );
    });

    // `report --server`: the heat wave is in the operator's report too.
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["report", "--server", &url, "--format", "md"])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.contains(&format!("| {hot} | 44.0 |")), "{md}");
}

fn prometheus() -> Option<std::path::PathBuf> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// A real Prometheus (Debian's package) scrapes the service every second;
/// PromQL's `rate()` over the scraped counter is the rate we ingest at.
#[test]
fn a_real_prometheus_scrapes_the_service_and_promql_returns_the_ingest_rate() {
    let Some(prom) = prometheus() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus (scripts/deps.sh)"
        );
        eprintln!("skipping: no prometheus (apt-get install prometheus)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = server(
        &dir.path().join("data"),
        "http://127.0.0.1:1",
        &["--http", "127.0.0.1:0"],
    );
    let target = http_addr(&srv)
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: edgeplan\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(
        Command::new(prom)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let inst = fleet(5);
    let url = srv.url();
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let mut tel = connect(&url, TelemetryClient::new).await;
        // A batch of one reading per site every 100 ms, for 12 s.
        let per_batch = inst.sites.len() as f64;
        let started = Instant::now();
        let mut sent = 0.0;
        while started.elapsed() < Duration::from_secs(12) {
            tel.ingest(tokio_stream::iter(vec![ambient_batch(
                &inst,
                now_s(),
                None,
            )]))
            .await
            .unwrap();
            sent += per_batch;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rate_sent = sent / started.elapsed().as_secs_f64();
        let query = |q: &str| {
            let u = format!("http://127.0.0.1:{port}/api/v1/query");
            let q = q.to_string();
            async move {
                let c = reqwest::Client::new();
                let r = c.get(u).query(&[("query", q)]).send().await.ok()?;
                let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
                let first = v["data"]["result"].as_array()?.first()?.clone();
                first["value"][1].as_str()?.parse::<f64>().ok()
            }
        };
        let rate = query("rate(edgeplan_readings_accepted_total[8s])")
            .await
            .expect("PromQL returned no ingest rate");
        assert!(
            rate > 0.5 * rate_sent && rate < 1.5 * rate_sent,
            "Prometheus says {rate:.1} readings/s, we sent {rate_sent:.1}/s"
        );
        assert_eq!(query("up{job=\"edgeplan\"}").await, Some(1.0));
        assert_eq!(query("edgeplan_leader").await, Some(1.0));
        assert_eq!(
            query("count(edgeplan_site_power_headroom_kw)").await,
            Some(inst.sites.len() as f64)
        );

        // The shipped Grafana dashboard: Prometheus accepts every query,
        // and every metric it names is one the service exposes.
        let exposed = reqwest::get(format!("http://{target}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let root = env!("CARGO_MANIFEST_DIR");
        let dash: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{root}/docs/grafana/edgeplan-dashboard.json"))
                .unwrap(),
        )
        .unwrap();
        let exprs: Vec<String> = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().clone())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect();
        assert!(exprs.len() >= 14, "{exprs:?}");
        for e in &exprs {
            let r: serde_json::Value = serde_json::from_str(
                &reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                    .query(&[("query", e)])
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(r["status"], "success", "{e}: {r}");
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("edgeplan_"))
            {
                assert!(
                    exposed.contains(&format!("# TYPE {name} "))
                        || ["_bucket", "_sum", "_count"].iter().any(|s| name
                            .strip_suffix(s)
                            .is_some_and(|b| exposed.contains(&format!("# TYPE {b} histogram")))),
                    "the dashboard's {name} is not exposed"
                );
            }
        }
    });
}

/// Off loopback the port needs TLS and tokens: without them the service
/// does not start; with them, a token that may read is asked for.
#[test]
fn off_loopback_the_http_port_needs_tls_and_a_token_that_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path().join("plain"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not loopback"), "{err}");

    let pki = crate::security::pki(dir.path());
    let (reader, writer) = (new_token(), new_token());
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert: {}\n  key: {}\nauth:\n  tokens:\n    - {{ name: ops, role: read-only, sha256: {} }}\n    - {{ name: gw, role: telemetry-writer, sha256: {} }}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            token_sha256(&reader),
            token_sha256(&writer)
        ),
    )
    .unwrap();
    let srv = Proc::start(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--http",
        "0.0.0.0:0",
        "--data-dir",
        dir.path().join("tls").to_str().unwrap(),
    ]);
    let base = http_addr(&srv);
    assert!(base.starts_with("https://0.0.0.0:"), "{base}");
    let base = base.replace("0.0.0.0", "localhost");
    rt().block_on(async {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let call = |token: Option<&str>, path: &str| {
            let mut r = client.get(format!("{base}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move { r.send().await.unwrap().status().as_u16() }
        };
        for path in ["metrics", "status", ""] {
            assert_eq!(call(None, path).await, 401, "/{path} without a token");
            assert_eq!(call(Some("wrong"), path).await, 401, "/{path}");
            assert_eq!(call(Some(&writer), path).await, 403, "/{path} as a gateway");
        }
        assert_eq!(call(Some(&reader), "metrics").await, 200);
        assert_eq!(call(Some(&reader), "status").await, 200);
        // Plaintext to the TLS port gets nothing.
        let plain = reqwest::get(base.replace("https://", "http://") + "metrics").await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());
    });
}
