//! `edgeplan collect` against real Redfish services started here: OpenStack's
//! sushy-static serving mockups from DMTF and captures of real vendors' BMCs
//! (`tests/fixtures/redfish/SOURCES.md`), over plain HTTP and TLS (a CA, a
//! pinned self-signed certificate); a BMC that never answers, one that
//! answers 503, one serving malformed JSON, and one that wants a session
//! login. The collector reads what each says, keeps going past the broken
//! ones and says what it skipped; the readings reach the service.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::edgeplan;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redfish");

use crate::live::free_port;

/// sushy-static on loopback, stopped on drop.
struct Sushy {
    child: Child,
    port: u16,
}

impl Sushy {
    fn start(mockup: &Path, tls: Option<(&Path, &Path)>) -> Sushy {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import sys; from sushy_tools.static.main import main; sys.argv[0] = 'sushy-static'; sys.exit(main())",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
        ])
        .arg(mockup)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((cert, key)) = tls {
            cmd.arg("-c").arg(cert).arg("-k").arg(key);
        }
        let child = cmd
            .spawn()
            .expect("python3 with sushy-tools (scripts/deps.sh installs it)");
        let s = Sushy { child, port };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "sushy-static did not start on {port} (is sushy-tools installed? scripts/deps.sh)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted BMC: each request answered by `respond(method, path, headers,
/// body)` → (status, extra headers, body). One connection at a time.
fn fake_bmc(
    respond: impl Fn(&str, &str, &BTreeMap<String, String>, &str) -> (u16, Vec<(String, String)>, String)
        + Send
        + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let (status, extra, text) =
                respond(&method, &path, &headers, &String::from_utf8_lossy(&body));
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                text.len()
            );
            for (k, v) in extra {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&text);
            let _ = stream.write_all(out.as_bytes());
        }
    });
    port
}

/// `edgeplan ARGS`, which must succeed (its stderr shown if not).
fn edgeplan_ok(args: &[&str]) -> std::process::Output {
    let out = edgeplan(args);
    assert!(
        out.status.success(),
        "edgeplan {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn endpoint(name: &str, url: &str, site: &str, rack: &str, extra: &str) -> String {
    format!("  - {{ name: {name}, url: \"{url}\", site: {site}, rack: {rack}{extra} }}\n")
}

/// One round of `edgeplan collect --json`: the round's report and stderr.
fn collect_once(dir: &Path, endpoints: &str, extra_args: &[&str]) -> (Value, String) {
    let config = dir.join("collect.yaml");
    std::fs::write(
        &config,
        format!("interval_s: 1\ntimeout_s: 2\nretries: 1\nconcurrency: 8\nendpoints:\n{endpoints}"),
    )
    .unwrap();
    let mut args = vec![
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--rounds",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra_args);
    let out = edgeplan(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    (report, stderr)
}

fn bmc<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["bmcs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["endpoint"] == name)
        .unwrap_or_else(|| panic!("no BMC {name} in {report}"))
}

#[test]
fn real_vendor_mockups_read_as_their_hardware_says() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/expected.json")).unwrap(),
    )
    .unwrap();
    let fixtures = [
        "dmtf-rackmount1",
        "dmtf-liquid-cooled",
        "hpe-dl325-ilo5",
        "gigabyte-ami",
        "intel-s2600bp",
        "hpe-xl675d-a40",
        "gpu-hgx-synthetic",
    ];
    let servers: Vec<Sushy> = fixtures
        .iter()
        .map(|f| Sushy::start(&Path::new(FIXTURES).join(f), None))
        .collect();
    let mut endpoints = String::new();
    for (f, s) in fixtures.iter().zip(&servers) {
        endpoints.push_str(&endpoint(
            f,
            &format!("http://127.0.0.1:{}", s.port),
            "fra",
            f,
            "",
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, stderr) = collect_once(dir.path(), &endpoints, &[]);
    for f in fixtures {
        let b = bmc(&report, f);
        assert!(b["error"].is_null(), "{f}: {}", b["error"]);
        let want = &expected[f];
        for (chassis, w) in want.as_object().unwrap() {
            let Some(w) = w.as_object() else { continue };
            if !w.contains_key("inlet_c") {
                continue;
            }
            // Keys are paths below Chassis/; the report keys chassis by Id.
            let id = chassis.rsplit('/').next().unwrap();
            let got = &b["chassis"][id];
            if w["inlet_c"].is_null() && w["power_w"].is_null() {
                assert!(got.is_null() || got["inlet_c"].is_null(), "{f}/{id}: {got}");
                continue;
            }
            assert_eq!(
                got["inlet_c"].as_f64(),
                w["inlet_c"].as_f64(),
                "{f}/{id} inlet: {got}"
            );
            assert_eq!(
                got["power_w"].as_f64(),
                w["power_w"].as_f64(),
                "{f}/{id} power: {got}"
            );
        }
        assert_eq!(
            b["gpu_power_w"].as_f64(),
            want["gpu_power_w"].as_f64(),
            "{f} GPU power"
        );
    }
    // What was skipped is said: a Disabled temperature, an Absent GPU,
    // a headroom "temperature", a disabled power meter.
    let skipped = |f: &str| -> Vec<String> {
        bmc(&report, f)["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert!(skipped("dmtf-rackmount1")
        .iter()
        .any(|s| s.contains("CPU2 Temp: Disabled")));
    assert!(skipped("gpu-hgx-synthetic")
        .iter()
        .any(|s| s.contains("Absent")));
    assert!(skipped("gpu-hgx-synthetic")
        .iter()
        .any(|s| s.contains("headroom")));
    assert!(skipped("gigabyte-ami")
        .iter()
        .any(|s| s.contains("Disabled")));
    // Readings: an inlet per chassis with one, a power sum per rack that
    // has every BMC's power, the GPU sum of the GPU site.
    assert!(report["held_back"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h.as_str().unwrap().contains("fra/gigabyte-ami power")));
    assert!(stderr.contains("7 BMCs"), "{stderr}");
}

#[test]
fn broken_bmcs_are_skipped_and_said_and_the_rest_read() {
    let good = Sushy::start(&Path::new(FIXTURES).join("hpe-dl325-ilo5"), None);
    let malformed = Sushy::start(&Path::new(FIXTURES).join("malformed"), None);
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let unavailable = fake_bmc(|_, _, _, _| (503, Vec::new(), "{}".into()));
    let closed = free_port();
    let mut endpoints = String::new();
    endpoints.push_str(&endpoint(
        "good",
        &format!("http://127.0.0.1:{}", good.port),
        "fra",
        "r1",
        "",
    ));
    endpoints.push_str(&endpoint(
        "bad-json",
        &format!("http://127.0.0.1:{}", malformed.port),
        "fra",
        "r2",
        "",
    ));
    endpoints.push_str(&endpoint(
        "silent",
        &format!("http://127.0.0.1:{silent_port}"),
        "fra",
        "r1",
        "",
    ));
    endpoints.push_str(&endpoint(
        "busy",
        &format!("http://127.0.0.1:{unavailable}"),
        "fra",
        "r3",
        "",
    ));
    endpoints.push_str(&endpoint(
        "gone",
        &format!("http://127.0.0.1:{closed}"),
        "fra",
        "r3",
        "",
    ));
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (report, stderr) = collect_once(dir.path(), &endpoints, &[]);
    // Bounded: a 2 s timeout and one retry, all BMCs at once.
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(bmc(&report, "good")["error"].is_null());
    assert_eq!(bmc(&report, "good")["chassis"]["1"]["inlet_c"], 17.0);
    let error = |n: &str| bmc(&report, n)["error"].as_str().unwrap_or("").to_string();
    assert!(error("silent").contains("timed out"), "{}", error("silent"));
    assert!(error("busy").contains("HTTP 503"), "{}", error("busy"));
    assert!(
        error("gone").contains("cannot connect"),
        "{}",
        error("gone")
    );
    // The malformed Thermal is skipped and said; the rest of that BMC is read.
    let bad = bmc(&report, "bad-json");
    assert!(bad["error"].is_null(), "{bad}");
    assert!(
        bad["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("malformed JSON")),
        "{bad}"
    );
    assert_eq!(bad["chassis"]["1U"]["inlet_c"], 24.8);
    // r1's power needs "silent", which did not answer: not sent, and said;
    // never a stale sum passed off as now.
    let held: Vec<&str> = report["held_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        held.iter()
            .any(|h| h.contains("fra/r1 power") && h.contains("silent")),
        "{held:?}"
    );
    assert!(held.iter().any(|h| h.contains("fra/r3 power")), "{held:?}");
    assert!(stderr.contains("3 BMCs unanswered"), "{stderr}");
    drop(silent);
}

#[test]
fn tls_to_a_bmc_by_its_ca_or_a_pinned_certificate_and_nothing_else() {
    use rcgen::{CertificateParams, KeyPair};
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    // A BMC's usual certificate: self-signed.
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("bmc.pem"), dir.path().join("bmc.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let pin: String = Sha256::digest(cert.der())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut wrong_pin = pin.clone();
    wrong_pin.replace_range(0..2, if &pin[0..2] == "00" { "11" } else { "00" });
    let tls_bmc = Sushy::start(
        &Path::new(FIXTURES).join("hpe-dl325-ilo5"),
        Some((&cert_path, &key_path)),
    );
    let url = format!("https://127.0.0.1:{}", tls_bmc.port);
    let mut endpoints = String::new();
    endpoints.push_str(&endpoint(
        "pinned",
        &url,
        "fra",
        "r1",
        &format!(", pinned_sha256: \"{pin}\""),
    ));
    endpoints.push_str(&endpoint(
        "by-ca",
        &url,
        "fra",
        "r2",
        &format!(", ca_cert: \"{}\"", cert_path.display()),
    ));
    endpoints.push_str(&endpoint("untrusted", &url, "fra", "r3", ""));
    endpoints.push_str(&endpoint(
        "wrong-pin",
        &url,
        "fra",
        "r4",
        &format!(", pinned_sha256: \"{wrong_pin}\""),
    ));
    let (report, _) = collect_once(dir.path(), &endpoints, &[]);
    for ok in ["pinned", "by-ca"] {
        let b = bmc(&report, ok);
        assert!(b["error"].is_null(), "{ok}: {b}");
        assert_eq!(b["chassis"]["1"]["power_w"], 97.0, "{ok}");
    }
    for refused in ["untrusted", "wrong-pin"] {
        let e = bmc(&report, refused)["error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(!e.is_empty(), "{refused} was trusted");
    }
}

/// A minimal BMC with one chassis: its root, chassis and Thermal.
fn tiny_bmc(path: &str) -> Option<String> {
    Some(
        match path {
            "/redfish/v1" | "/redfish/v1/" => r#"{"Chassis": {"@odata.id": "/redfish/v1/Chassis"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}}"#,
            "/redfish/v1/Chassis" => r#"{"Members": [{"@odata.id": "/redfish/v1/Chassis/1"},
                {"@odata.id": "/redfish/v1/Chassis/2"}]}"#,
            // A chassis of the new model only: power from its supplies.
            "/redfish/v1/Chassis/2" => r#"{"Id": "2", "PowerSubsystem": {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem"}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem" => r#"{"PowerSupplies": {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies"}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies" => r#"{"Members": [
                {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay1"},
                {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay2"},
                {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay3"}]}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay1" => r#"{"Metrics": {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay1/Metrics"}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay2" => r#"{"Metrics": {"@odata.id": "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay2/Metrics"}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay3" => r#"{"Status": {"State": "Absent"}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay1/Metrics" => r#"{"InputPowerWatts": {"Reading": 180.5}}"#,
            "/redfish/v1/Chassis/2/PowerSubsystem/PowerSupplies/Bay2/Metrics" => r#"{"InputPowerWatts": {"Reading": 170.0}}"#,
            "/redfish/v1/Chassis/1" => r#"{"Id": "1", "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
                "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}}"#,
            "/redfish/v1/Chassis/1/Thermal" => r#"{"Temperatures": [
                {"Name": "System Board Inlet Temp", "ReadingCelsius": 19, "PhysicalContext": "Intake",
                 "Status": {"State": "Enabled"}},
                {"Name": "CPU1 Temp", "ReadingCelsius": 51, "PhysicalContext": "CPU"}]}"#,
            "/redfish/v1/Chassis/1/Power" => r#"{"PowerControl": [{"PowerConsumedWatts": 240}]}"#,
            _ => return None,
        }
        .to_string(),
    )
}

#[test]
fn sessions_and_basic_auth_as_bmcs_want_them() {
    // Sessions: POST the credentials, then X-Auth-Token on every GET.
    let session_bmc = fake_bmc(|method, path, headers, body| {
        if method == "POST" && path == "/redfish/v1/SessionService/Sessions" {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            return if v["UserName"] == "root" && v["Password"] == "calvin" {
                (
                    201,
                    vec![
                        ("X-Auth-Token".into(), "tok-123".into()),
                        (
                            "Location".into(),
                            "/redfish/v1/SessionService/Sessions/1".into(),
                        ),
                    ],
                    "{}".into(),
                )
            } else {
                (401, Vec::new(), "{}".into())
            };
        }
        let root = path == "/redfish/v1" || path == "/redfish/v1/";
        if !root && headers.get("x-auth-token").map(String::as_str) != Some("tok-123") {
            return (401, Vec::new(), "{}".into());
        }
        match tiny_bmc(path) {
            Some(b) => (200, Vec::new(), b),
            None => (404, Vec::new(), "{}".into()),
        }
    });
    // Basic auth on every request (root:calvin).
    let basic_bmc = fake_bmc(|_, path, headers, _| {
        if headers.get("authorization").map(String::as_str) != Some("Basic cm9vdDpjYWx2aW4=") {
            return (401, Vec::new(), "{}".into());
        }
        match tiny_bmc(path) {
            Some(b) => (200, Vec::new(), b),
            None => (404, Vec::new(), "{}".into()),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut endpoints = String::new();
    endpoints.push_str(&endpoint(
        "session",
        &format!("http://127.0.0.1:{session_bmc}"),
        "fra",
        "r1",
        ", username: root, password_env: EDGEPLAN_TEST_BMC_PASSWORD",
    ));
    endpoints.push_str(&endpoint(
        "basic",
        &format!("http://127.0.0.1:{basic_bmc}"),
        "fra",
        "r2",
        ", username: root, password: calvin, session: false",
    ));
    endpoints.push_str(&endpoint(
        "wrong",
        &format!("http://127.0.0.1:{session_bmc}"),
        "fra",
        "r3",
        ", username: root, password: hunter2",
    ));
    let config = dir.path().join("collect.yaml");
    std::fs::write(&config, format!("timeout_s: 2\nendpoints:\n{endpoints}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args([
            "collect",
            "--config",
            config.to_str().unwrap(),
            "--rounds",
            "1",
            "--json",
        ])
        .env("EDGEPLAN_TEST_BMC_PASSWORD", "calvin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for ok in ["session", "basic"] {
        let b = bmc(&report, ok);
        assert!(b["error"].is_null(), "{ok}: {b}");
        assert_eq!(b["chassis"]["1"]["inlet_c"], 19.0);
        assert_eq!(b["chassis"]["1"]["power_w"], 240.0);
        // The supplies' input power, the absent bay skipped.
        assert_eq!(b["chassis"]["2"]["power_w"], 350.5, "{b}");
    }
    assert!(bmc(&report, "session")["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s.as_str().unwrap().contains("Bay3: Absent")));
    let e = bmc(&report, "wrong")["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(e.contains("session login: HTTP 401"), "{e}");
    // The password never shows in what the collector prints.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("calvin"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("calvin"));
}

#[test]
fn bad_collect_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collect.yaml");
    std::fs::write(
        &config,
        "interval_s: 0\nendpoints:\n  - { name: a, url: \"ftp://x\", site: s, rack: r }\n  - { name: a, url: \"http://x\", site: s, rack: r, pinned_sha256: \"zz\" }\n",
    )
    .unwrap();
    let out = edgeplan(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--rounds",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "interval_s",
        "endpoints[0] (a).url",
        "endpoints[1] (a).name: used twice",
        "endpoints[1] (a).pinned_sha256",
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
}

#[test]
fn collected_readings_reach_the_service_its_watch_and_nats() {
    use crate::live::*;
    use edgeplan::api::pb;
    use edgeplan::api::pb::telemetry_client::TelemetryClient;
    use edgeplan::service::client::{push_instance, Connect};
    use tokio_stream::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let fleet = edgeplan::service::load::load_fleet(1, 0).unwrap();
    let site = fleet.sites[0].id.clone();
    let bmc = Sushy::start(&Path::new(FIXTURES).join("hpe-dl325-ilo5"), None);
    let endpoints = endpoint(
        "dl325",
        &format!("http://127.0.0.1:{}", bmc.port),
        &site,
        "r1",
        "",
    );
    let config = dir.path().join("collect.yaml");
    std::fs::write(
        &config,
        format!("site_power_from_bmcs: true\nendpoints:\n{endpoints}"),
    )
    .unwrap();
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &fleet)
            .await
            .unwrap();
    });
    edgeplan_ok(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--rounds",
        "1",
        "--server",
        &srv.url(),
    ]);
    rt().block_on(async {
        let mut watch = connect(&srv.url(), TelemetryClient::new)
            .await
            .watch_sites(pb::WatchSitesRequest {
                sites: vec![site.clone()],
                interval_ms: 100,
            })
            .await
            .unwrap()
            .into_inner();
        let states = watch.next().await.unwrap().unwrap();
        let s = &states.sites[0];
        // iLO 5's "01-Inlet Ambient" (17 °C) and its 97 W.
        assert_eq!(s.max_inlet_c, Some(17.0), "{s:?}");
        assert_eq!(s.site_power_kw, Some(0.097), "{s:?}");
        assert_eq!(s.stale_sensors, 0);
    });

    // The same round onto NATS JetStream, as a site gateway would.
    let nats = nats_url();
    let tag = format!("collect{}", std::process::id());
    let bus = edgeplan::service::bus::BusConfig {
        url: nats.clone(),
        stream: format!("EDGEPLAN_TEST_{tag}"),
        subject_prefix: format!("{tag}.telemetry"),
        ..Default::default()
    };
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap());
        let consumer = edgeplan::service::bus::consumer(&js, &bus).await.unwrap();
        edgeplan_ok(&[
            "collect",
            "--config",
            config.to_str().unwrap(),
            "--rounds",
            "1",
            "--nats",
            &nats,
            "--subject-prefix",
            &bus.subject_prefix,
        ]);
        let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
        let m = messages.next().await.expect("a message").unwrap();
        assert_eq!(m.subject.as_str(), format!("{}.{site}", bus.subject_prefix));
        let batch = <pb::ReadingBatch as prost::Message>::decode(m.payload.clone()).unwrap();
        let inlet = batch
            .readings
            .iter()
            .find(|r| r.device_id == "dl325/1/inlet")
            .expect("the inlet");
        assert_eq!((inlet.value, inlet.rack.as_str()), (17.0, "r1"));
        assert!(batch
            .readings
            .iter()
            .any(|r| r.device_id == format!("{site}/r1/bmc-power") && r.value == 97.0));
        m.ack().await.unwrap();
    });
}

#[test]
fn collect_bench_on_simulated_bmcs_delivers_every_reading() {
    let dir = tempfile::tempdir().unwrap();
    let sim = crate::live::sim(&dir.path().join("journal.tsv"), &[]);
    let srv = crate::live::server(&dir.path().join("data"), &sim.url(), &[]);
    let out = edgeplan_ok(&[
        "collect-bench",
        "--bmcs",
        "200",
        "--sites",
        "5",
        "--rounds",
        "2",
        "--server",
        &srv.url(),
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Per round: 200 inlets, 400 fans, 4 racks × 5 sites of power, 5 site sums.
    assert_eq!(r["readings_per_round"], 200 + 400 + 20 + 5, "{r}");
    assert_eq!(r["http_requests_per_round"], 1000);
    assert_eq!(r["rejected"], 0);
    assert_eq!(r["accepted"], 2 * 625);
    assert!(r["change_to_watch_s"].as_f64().unwrap() < 10.0, "{r}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/collect.yaml");
    let cfg = edgeplan::service::collect::CollectConfig::load(Path::new(path)).unwrap();
    assert_eq!(cfg.endpoints.len(), 2);
    assert!(cfg.endpoints[1].pinned_sha256.is_some());
}

/// Sessions end (a BMC's idle timeout, a reboot): a GET answered 401 with
/// a token in use logs in again and retries, so a round is not lost.
#[test]
fn an_expired_session_logs_in_again() {
    use std::sync::{Arc, Mutex};
    // Each token is good for 4 authenticated GETs; a round takes 12.
    let state = Arc::new(Mutex::new((0u32, 0u32))); // (logins, uses of the current token)
    let seen = state.clone();
    let port = fake_bmc(move |method, path, headers, _| {
        let mut s = state.lock().unwrap();
        if method == "POST" && path == "/redfish/v1/SessionService/Sessions" {
            s.0 += 1;
            s.1 = 0;
            return (
                201,
                vec![("X-Auth-Token".into(), format!("tok-{}", s.0))],
                "{}".into(),
            );
        }
        let root = path == "/redfish/v1" || path == "/redfish/v1/";
        if !root {
            let current = format!("tok-{}", s.0);
            if headers.get("x-auth-token") != Some(&current) || s.1 >= 4 {
                return (401, Vec::new(), "{}".into());
            }
            s.1 += 1;
        }
        match tiny_bmc(path) {
            Some(b) => (200, Vec::new(), b),
            None => (404, Vec::new(), "{}".into()),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collect.yaml");
    std::fs::write(
        &config,
        format!(
            "interval_s: 0.2\ntimeout_s: 2\nendpoints:\n{}",
            endpoint(
                "s",
                &format!("http://127.0.0.1:{port}"),
                "fra",
                "r1",
                ", username: root, password: calvin"
            )
        ),
    )
    .unwrap();
    let out = edgeplan_ok(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--rounds",
        "2",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rounds: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 2);
    for r in &rounds {
        let b = bmc(r, "s");
        assert!(b["error"].is_null(), "{b}");
        assert_eq!(b["chassis"]["1"]["power_w"], 240.0, "{b}");
        assert_eq!(b["chassis"]["2"]["power_w"], 350.5, "{b}");
    }
    assert!(
        seen.lock().unwrap().0 >= 6,
        "logins: {}",
        seen.lock().unwrap().0
    );
}
