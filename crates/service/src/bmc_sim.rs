//! Simulated BMCs for measuring `collect`: one HTTP/1.1 server on loopback
//! (keep-alive, many connections at once) where `/bmc/<n>/redfish/v1/…` is
//! BMC `n`'s Redfish service: a chassis with a legacy `Thermal` (an inlet
//! by `PhysicalContext`, a CPU temperature, two fans in rpm) and `Power`
//! (`PowerConsumedWatts`). A BMC's power can be stepped while it runs, to
//! time a change from the BMC to the service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The fleet's values, shared with whoever steps them.
pub struct SimState {
    /// Per BMC: power, W (f64 bits).
    watts: Vec<AtomicU64>,
    /// Requests answered.
    pub requests: AtomicU64,
}

impl SimState {
    pub fn set_watts(&self, bmc: usize, w: f64) {
        if let Some(a) = self.watts.get(bmc) {
            a.store(w.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn watts(&self, bmc: usize) -> f64 {
        self.watts
            .get(bmc)
            .map_or(0.0, |a| f64::from_bits(a.load(Ordering::Relaxed)))
    }
}

pub struct BmcSim {
    pub port: u16,
    pub state: Arc<SimState>,
}

/// BMC `n`'s document at `path` (below its `/bmc/<n>` prefix).
fn document(state: &SimState, n: usize, path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    Some(match path {
        "/redfish/v1" => r#"{"@odata.id": "/redfish/v1", "Chassis": {"@odata.id": "/redfish/v1/Chassis"}, "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}}"#.to_string(),
        "/redfish/v1/Chassis" => r#"{"Members": [{"@odata.id": "/redfish/v1/Chassis/1"}]}"#.to_string(),
        "/redfish/v1/Chassis/1" => r#"{"Id": "1", "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"}, "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}}"#.to_string(),
        "/redfish/v1/Chassis/1/Thermal" => format!(
            r#"{{"Temperatures": [
                {{"Name": "Inlet Temp", "ReadingCelsius": {:.1}, "PhysicalContext": "Intake", "Status": {{"State": "Enabled"}}}},
                {{"Name": "CPU1 Temp", "ReadingCelsius": 55, "PhysicalContext": "CPU", "Status": {{"State": "Enabled"}}}}],
              "Fans": [
                {{"Name": "Fan1", "Reading": 6000, "ReadingUnits": "RPM", "Status": {{"State": "Enabled"}}}},
                {{"Name": "Fan2", "Reading": 6120, "ReadingUnits": "RPM", "Status": {{"State": "Enabled"}}}}]}}"#,
            20.0 + (n % 7) as f64 * 0.5
        ),
        "/redfish/v1/Chassis/1/Power" => format!(
            r#"{{"PowerControl": [{{"Name": "System Power Control", "PowerConsumedWatts": {:.1}}}]}}"#,
            state.watts(n)
        ),
        _ => return None,
    })
}

/// Serve `bmcs` simulated BMCs on a free loopback port until the runtime stops.
pub async fn start(bmcs: usize, watts: f64) -> anyhow::Result<BmcSim> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = Arc::new(SimState {
        watts: (0..bmcs).map(|_| AtomicU64::new(watts.to_bits())).collect(),
        requests: AtomicU64::new(0),
    });
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = shared.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &state).await;
            });
        }
    });
    Ok(BmcSim { port, state })
}

async fn serve(stream: tokio::net::TcpStream, state: &SimState) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        state.requests.fetch_add(1, Ordering::Relaxed);
        // /bmc/<n>/redfish/v1/…
        let rest = path.strip_prefix("/bmc/").unwrap_or("");
        let (n, doc) = match rest.split_once('/') {
            Some((n, p)) => (n.parse::<usize>().ok(), format!("/{p}")),
            None => (None, String::new()),
        };
        let found = n
            .filter(|&n| n < state.watts.len())
            .and_then(|n| document(state, n, &doc));
        let (status, text) = match found {
            Some(t) => ("200 OK", t),
            None => ("404 Not Found", "{}".to_string()),
        };
        // One write: head and body apart would wait on Nagle and delayed ACKs.
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        write.write_all(reply.as_bytes()).await?;
    }
}
