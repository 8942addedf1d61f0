//! What a server's BMC says, read from its Redfish (DMTF) resources: the
//! inlet temperature, the server's power, its fans and its GPUs' power.
//! Pure: JSON documents in (as `edgeplan collect` fetched them), values
//! out; no I/O. Vendors differ, and each rule here is one of theirs:
//! - the inlet is `ThermalMetrics.TemperatureSummaryCelsius.Intake`, else a
//!   temperature with `PhysicalContext: Intake` (unless every temperature
//!   of the chassis says the same context, as some BMCs do), else one
//!   whose name says inlet, intake or ambient;
//! - a reading is `ReadingCelsius`, `Reading` (+ `ReadingUnits`), or the
//!   pre-1.0 `CurrentReading` (+ `Units`);
//! - a sensor whose `Status.State` is Absent, Disabled, StandbyOffline or
//!   UnavailableOffline is skipped and counted (such sensors read 0); no
//!   `Status` at all counts as usable;
//! - a temperature read as headroom (`ReadingBasis: Headroom`) is not one.

use serde_json::Value;

/// One temperature a chassis reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    pub name: String,
    pub context: Option<String>,
    pub celsius: f64,
}

/// What one chassis says, after the vendor rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisReadings {
    /// The inlet: (sensor name, °C).
    pub inlet: Option<(String, f64)>,
    /// The chassis' power, W.
    pub power_w: Option<f64>,
    /// Fans in rpm: (name, rpm).
    pub fans_rpm: Vec<(String, f64)>,
    /// Sensors skipped, with why ("CPU2 Temp: Disabled").
    pub skipped: Vec<String>,
}

/// The documents of one chassis (each `None` where the BMC has none).
#[derive(Debug, Clone, Default)]
pub struct ChassisDocs<'a> {
    pub thermal: Option<&'a Value>,
    pub thermal_metrics: Option<&'a Value>,
    pub power: Option<&'a Value>,
    pub environment: Option<&'a Value>,
    /// Members of the chassis' `Sensors` collection.
    pub sensors: Vec<&'a Value>,
    /// `PowerSubsystem/PowerSupplies/{id}/Metrics` of each supply (read
    /// only when neither `Power` nor `EnvironmentMetrics` gives power).
    pub supply_metrics: Vec<&'a Value>,
}

/// Why a resource's reading is not used, from its `Status`; `None` when usable.
pub fn unusable(v: &Value) -> Option<String> {
    let state = v.get("Status")?.get("State")?.as_str()?;
    matches!(
        state,
        "Absent" | "Disabled" | "StandbyOffline" | "UnavailableOffline"
    )
    .then(|| state.to_string())
}

fn name_of(v: &Value) -> String {
    ["Name", "FanName", "DeviceName", "Id", "MemberId"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("?")
        .to_string()
}

/// A reading and its unit as the resource writes them.
fn reading(v: &Value) -> Option<(f64, Option<&str>)> {
    if let Some(c) = v.get("ReadingCelsius").and_then(Value::as_f64) {
        return Some((c, Some("Cel")));
    }
    if let Some(r) = v.get("Reading").and_then(Value::as_f64) {
        return Some((r, v.get("ReadingUnits").and_then(Value::as_str)));
    }
    let r = v.get("CurrentReading").and_then(Value::as_f64)?;
    Some((r, v.get("Units").and_then(Value::as_str)))
}

fn celsius(value: f64, unit: Option<&str>) -> Option<f64> {
    match unit {
        None | Some("Cel") | Some("Celsius") | Some("C") => Some(value),
        Some("[degF]") | Some("Fahrenheit") | Some("F") => Some((value - 32.0) * 5.0 / 9.0),
        Some(_) => None,
    }
}

fn headroom(v: &Value) -> bool {
    v.get("ReadingBasis").and_then(Value::as_str) == Some("Headroom")
}

/// A sensor's temperature, or why it has none usable.
fn temperature(v: &Value, skipped: &mut Vec<String>) -> Option<Temperature> {
    let name = name_of(v);
    if let Some(state) = unusable(v) {
        skipped.push(format!("{name}: {state}"));
        return None;
    }
    if headroom(v) {
        skipped.push(format!("{name}: headroom, not a temperature"));
        return None;
    }
    let (value, unit) = reading(v)?;
    Some(Temperature {
        celsius: celsius(value, unit)?,
        context: v
            .get("PhysicalContext")
            .and_then(Value::as_str)
            .map(str::to_string),
        name,
    })
}

/// Is this Sensor a temperature? (`ReadingType`, else its unit.)
fn is_temperature_sensor(v: &Value) -> bool {
    match v.get("ReadingType").and_then(Value::as_str) {
        Some(t) => t == "Temperature",
        None => matches!(
            v.get("ReadingUnits").and_then(Value::as_str),
            Some("Cel") | Some("[degF]")
        ),
    }
}

/// The inlet among a chassis' temperatures, by the rules above.
pub fn pick_inlet(temps: &[Temperature]) -> Option<&Temperature> {
    let contexts: Vec<Option<&str>> = temps.iter().map(|t| t.context.as_deref()).collect();
    // A context every temperature shares tells nothing (one vendor marks
    // all "Intake", another all "CPU").
    let telling = temps.len() > 1 && contexts.iter().any(|c| *c != contexts[0]);
    if telling {
        if let Some(t) = temps
            .iter()
            .find(|t| t.context.as_deref() == Some("Intake"))
        {
            return Some(t);
        }
    }
    let named = |words: &[&str]| {
        temps.iter().find(|t| {
            let n = t.name.to_ascii_lowercase();
            words.iter().any(|w| n.contains(w))
        })
    };
    named(&["inlet", "intake"])
        .or_else(|| named(&["ambient"]))
        .or_else(|| {
            // One sensor alone marked Intake is still the inlet.
            (temps.len() == 1 && temps[0].context.as_deref() == Some("Intake")).then(|| &temps[0])
        })
}

/// Read one chassis.
pub fn chassis(docs: &ChassisDocs<'_>) -> ChassisReadings {
    let mut out = ChassisReadings::default();
    let mut temps = Vec::new();
    if let Some(th) = docs.thermal {
        for t in th
            .get("Temperatures")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = temperature(t, &mut out.skipped) {
                temps.push(t);
            }
        }
        for f in th
            .get("Fans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            fan(f, &mut out);
        }
    }
    for s in &docs.sensors {
        if is_temperature_sensor(s) {
            if let Some(t) = temperature(s, &mut out.skipped) {
                temps.push(t);
            }
        } else if s.get("ReadingType").and_then(Value::as_str) == Some("Rotational") {
            fan(s, &mut out);
        }
    }
    let summary = docs
        .thermal_metrics
        .and_then(|m| m.pointer("/TemperatureSummaryCelsius/Intake/Reading"))
        .and_then(Value::as_f64);
    out.inlet = match summary {
        Some(c) => Some(("TemperatureSummaryCelsius.Intake".to_string(), c)),
        None => pick_inlet(&temps).map(|t| (t.name.clone(), t.celsius)),
    };

    // Power: the legacy PowerControl entries that may be read, else the
    // chassis' EnvironmentMetrics.
    let mut legacy = None;
    if let Some(p) = docs.power {
        for c in p
            .get("PowerControl")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(w) = c.get("PowerConsumedWatts").and_then(Value::as_f64) else {
                continue;
            };
            if let Some(state) = unusable(c) {
                out.skipped.push(format!("{}: {state}", name_of(c)));
                continue;
            }
            *legacy.get_or_insert(0.0) += w;
        }
    }
    out.power_w = legacy
        .or_else(|| environment_power_w(docs.environment))
        .or_else(|| {
            // The new model's supplies: their input power, summed.
            docs.supply_metrics
                .iter()
                .filter_map(|m| {
                    m.pointer("/InputPowerWatts/Reading")
                        .and_then(Value::as_f64)
                })
                .reduce(|a, b| a + b)
        });
    out
}

/// `EnvironmentMetrics.PowerWatts.Reading`, W.
pub fn environment_power_w(environment: Option<&Value>) -> Option<f64> {
    environment
        .and_then(|e| e.pointer("/PowerWatts/Reading"))
        .and_then(Value::as_f64)
}

fn fan(f: &Value, out: &mut ChassisReadings) {
    let name = name_of(f);
    if let Some(state) = unusable(f) {
        out.skipped.push(format!("{name}: {state}"));
        return;
    }
    match reading(f) {
        Some((rpm, Some("RPM") | Some("{rev}/min"))) => out.fans_rpm.push((name, rpm)),
        Some((_, unit)) => out.skipped.push(format!(
            "{name}: fan speed in {}, not rpm",
            unit.unwrap_or("no unit")
        )),
        None => {}
    }
}

/// A GPU's power, W, from its `Processor` and that processor's
/// `EnvironmentMetrics` (else its deprecated `ProcessorMetrics`):
/// `Err(reason)` for a GPU whose status says skip it; `Ok(None)` for a
/// processor that is no GPU or reports no power.
pub fn gpu_power_w(
    processor: &Value,
    environment: Option<&Value>,
    metrics: Option<&Value>,
) -> Result<Option<f64>, String> {
    if processor.get("ProcessorType").and_then(Value::as_str) != Some("GPU") {
        return Ok(None);
    }
    if let Some(state) = unusable(processor) {
        return Err(format!("{}: {state}", name_of(processor)));
    }
    Ok(environment
        .and_then(|e| e.pointer("/PowerWatts/Reading"))
        .or_else(|| metrics.and_then(|m| m.get("ConsumedPowerWatt")))
        .and_then(Value::as_f64))
}

/// The `@odata.id` links of a collection's `Members`.
pub fn members(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// The `@odata.id` a property links to (`{"Thermal": {"@odata.id": …}}`).
pub fn link(v: &Value, property: &str) -> Option<String> {
    v.get(property)?
        .get("@odata.id")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_shared_context_tells_nothing_and_the_name_decides() {
        // Every temperature "Intake" (as one AMI BMC writes them): the name decides.
        let thermal = json!({"Temperatures": [
            {"Name": "CPU0_TEMP", "ReadingCelsius": 55, "PhysicalContext": "Intake"},
            {"Name": "MB Inlet", "ReadingCelsius": 21, "PhysicalContext": "Intake"},
            {"Name": "DIMM", "ReadingCelsius": 40, "PhysicalContext": "Intake",
             "Status": {"State": "Absent"}}
        ]});
        let r = chassis(&ChassisDocs {
            thermal: Some(&thermal),
            ..Default::default()
        });
        assert_eq!(r.inlet, Some(("MB Inlet".to_string(), 21.0)));
        assert_eq!(r.skipped, vec!["DIMM: Absent".to_string()]);
    }

    #[test]
    fn readings_in_every_vendor_spelling() {
        let sensors = [
            json!({"Name": "Intake", "Reading": 75.2, "ReadingUnits": "[degF]",
                   "ReadingType": "Temperature", "PhysicalContext": "Intake"}),
            json!({"Name": "CPU", "Reading": 60, "ReadingUnits": "Cel", "PhysicalContext": "CPU"}),
            json!({"Name": "GPU headroom", "Reading": 20, "ReadingUnits": "Cel",
                   "ReadingBasis": "Headroom", "PhysicalContext": "GPU"}),
            json!({"Name": "Fan1", "Reading": 5400, "ReadingUnits": "{rev}/min",
                   "ReadingType": "Rotational"}),
        ];
        let thermal = json!({"Fans": [
            {"FanName": "Fan 2", "CurrentReading": 31, "Units": "Percent"}
        ]});
        let power = json!({"PowerControl": [
            {"PowerConsumedWatts": 97},
            {"Name": "off", "PowerConsumedWatts": 100, "Status": {"State": "Disabled"}}
        ]});
        let r = chassis(&ChassisDocs {
            thermal: Some(&thermal),
            power: Some(&power),
            sensors: sensors.iter().collect(),
            ..Default::default()
        });
        let (name, c) = r.inlet.unwrap();
        assert_eq!(name, "Intake");
        assert!((c - 24.0).abs() < 1e-9, "{c}");
        assert_eq!(r.power_w, Some(97.0));
        assert_eq!(r.fans_rpm, vec![("Fan1".to_string(), 5400.0)]);
        assert!(r.skipped.iter().any(|s| s.starts_with("GPU headroom")));
        assert!(r
            .skipped
            .iter()
            .any(|s| s == "Fan 2: fan speed in Percent, not rpm"));
        assert!(r.skipped.iter().any(|s| s == "off: Disabled"));
    }

    #[test]
    fn power_from_the_supplies_when_nothing_else_says() {
        let supplies = [
            json!({"InputPowerWatts": {"Reading": 210.5}}),
            json!({"InputPowerWatts": {"Reading": 199.5}}),
        ];
        let env = json!({"TemperatureCelsius": {"Reading": 30}});
        let r = chassis(&ChassisDocs {
            environment: Some(&env),
            supply_metrics: supplies.iter().collect(),
            ..Default::default()
        });
        assert_eq!(r.power_w, Some(410.0));
        let with_env = json!({"PowerWatts": {"Reading": 400}});
        let r = chassis(&ChassisDocs {
            environment: Some(&with_env),
            supply_metrics: supplies.iter().collect(),
            ..Default::default()
        });
        assert_eq!(r.power_w, Some(400.0));
    }

    #[test]
    fn gpus_read_their_environment_and_absent_ones_are_skipped() {
        let gpu = json!({"Name": "GPU 1", "ProcessorType": "GPU", "Status": {"State": "Enabled"}});
        let env = json!({"PowerWatts": {"Reading": 412.0}});
        assert_eq!(gpu_power_w(&gpu, Some(&env), None), Ok(Some(412.0)));
        let old = json!({"ConsumedPowerWatt": 82});
        assert_eq!(gpu_power_w(&gpu, None, Some(&old)), Ok(Some(82.0)));
        let absent =
            json!({"Name": "GPU 4", "ProcessorType": "GPU", "Status": {"State": "Absent"}});
        assert_eq!(
            gpu_power_w(&absent, Some(&env), None),
            Err("GPU 4: Absent".into())
        );
        let cpu = json!({"ProcessorType": "CPU"});
        assert_eq!(gpu_power_w(&cpu, Some(&env), None), Ok(None));
    }
}
