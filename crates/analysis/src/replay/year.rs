//! A year of hourly series per grid zone — day-ahead electricity price,
//! grid carbon intensity, outside temperature and humidity — as the
//! replay reads them: one wide CSV per kind (a row per UTC hour, a column
//! per zone) and `zones.csv`. `Year::shipped_2023` is `data/year2023/`
//! (sources in its README). Pure: text in, values out.

use std::collections::HashMap;

/// A grid zone and where its weather was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub id: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
}

/// One zone's hourly series, index = hour of the year.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZoneHours {
    /// Day-ahead price, currency (USD) per kWh; may be negative.
    pub price_per_kwh: Vec<f64>,
    pub carbon_g_per_kwh: Vec<f64>,
    pub temperature_c: Vec<f64>,
    pub humidity_pct: Vec<f64>,
}

/// Every zone's hours, all of the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Year {
    pub zones: Vec<Zone>,
    /// Per zone, in `zones`' order.
    pub hours: Vec<ZoneHours>,
    /// The UTC start of each hour, as the files name it.
    pub labels: Vec<String>,
}

/// The texts a year is parsed from.
pub struct YearFiles<'a> {
    pub zones: &'a str,
    pub price_usd_per_mwh: &'a str,
    pub carbon_g_per_kwh: &'a str,
    pub temperature_c: &'a str,
    pub humidity_pct: &'a str,
}

impl YearFiles<'static> {
    /// `data/year2023/`, compiled in.
    pub const SHIPPED_2023: YearFiles<'static> = YearFiles {
        zones: include_str!("../../../../data/year2023/zones.csv"),
        price_usd_per_mwh: include_str!("../../../../data/year2023/price_usd_per_mwh.csv"),
        carbon_g_per_kwh: include_str!("../../../../data/year2023/carbon_g_per_kwh.csv"),
        temperature_c: include_str!("../../../../data/year2023/temperature_c.csv"),
        humidity_pct: include_str!("../../../../data/year2023/humidity_pct.csv"),
    };
}

impl Year {
    /// The year shipped with edgeplan: 2023 at ten grid zones.
    pub fn shipped_2023() -> Result<Year, String> {
        Year::parse(&YearFiles::SHIPPED_2023)
    }

    /// Parse the files; an error names the file, line and column.
    pub fn parse(files: &YearFiles) -> Result<Year, String> {
        let zones = parse_zones(files.zones)?;
        let ids: Vec<&str> = zones.iter().map(|z| z.id.as_str()).collect();
        let (labels, price) = parse_wide("price_usd_per_mwh.csv", files.price_usd_per_mwh, &ids)?;
        let mut kinds = Vec::new();
        for (name, text) in [
            ("carbon_g_per_kwh.csv", files.carbon_g_per_kwh),
            ("temperature_c.csv", files.temperature_c),
            ("humidity_pct.csv", files.humidity_pct),
        ] {
            let (other, values) = parse_wide(name, text, &ids)?;
            if other != labels {
                return Err(format!(
                    "{name}: its hours differ from price_usd_per_mwh.csv's ({} against {})",
                    other.len(),
                    labels.len()
                ));
            }
            kinds.push(values);
        }
        let [carbon, temperature, humidity]: [Vec<Vec<f64>>; 3] = kinds
            .try_into()
            .map_err(|_| "three kinds besides price".to_string())?;
        let hours = (0..zones.len())
            .map(|z| ZoneHours {
                price_per_kwh: price[z].iter().map(|p| p / 1000.0).collect(),
                carbon_g_per_kwh: carbon[z].clone(),
                temperature_c: temperature[z].clone(),
                humidity_pct: humidity[z].clone(),
            })
            .collect();
        Ok(Year {
            zones,
            hours,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first hour whose label starts with `date` ("2023-07-01" or a
    /// full "2023-07-01T12:00:00Z").
    pub fn hour_of(&self, date: &str) -> Result<usize, String> {
        self.labels
            .iter()
            .position(|l| l.starts_with(date))
            .ok_or_else(|| {
                format!(
                    "no hour {date:?} in the year ({} to {})",
                    self.labels.first().map_or("", String::as_str),
                    self.labels.last().map_or("", String::as_str)
                )
            })
    }

    pub fn zone_index(&self, id: &str) -> Option<usize> {
        self.zones.iter().position(|z| z.id == id)
    }

    /// The zone whose weather station is nearest (great circle) to a point.
    pub fn nearest_zone(&self, lat: f64, lon: f64) -> usize {
        let mut best = (f64::INFINITY, 0);
        for (i, z) in self.zones.iter().enumerate() {
            let d = great_circle_km(lat, lon, z.lat, z.lon);
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1
    }
}

/// Distance between two points on the Earth, km (haversine).
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

fn parse_zones(text: &str) -> Result<Vec<Zone>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("zones.csv: {e}"))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("zones.csv: no column {name:?}"))
    };
    let (id, city, lat, lon) = (col("zone")?, col("city")?, col("lat")?, col("lon")?);
    let mut zones = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("zones.csv line {}: {e}", n + 2))?;
        let number = |i: usize, what: &str| -> Result<f64, String> {
            record
                .get(i)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("zones.csv line {}: {what} is not a number", n + 2))
        };
        zones.push(Zone {
            id: record.get(id).unwrap_or_default().to_string(),
            city: record.get(city).unwrap_or_default().to_string(),
            lat: number(lat, "lat")?,
            lon: number(lon, "lon")?,
        });
    }
    if zones.is_empty() {
        return Err("zones.csv: no zones".into());
    }
    Ok(zones)
}

/// (hour labels, per zone in `ids`' order its values).
fn parse_wide(
    name: &str,
    text: &str,
    ids: &[&str],
) -> Result<(Vec<String>, Vec<Vec<f64>>), String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .clone();
    let by_name: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let columns: Vec<usize> = ids
        .iter()
        .map(|id| {
            by_name
                .get(id)
                .copied()
                .ok_or_else(|| format!("{name}: no column for zone {id:?}"))
        })
        .collect::<Result<_, _>>()?;
    let mut labels = Vec::new();
    let mut values = vec![Vec::new(); ids.len()];
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("{name} line {}: {e}", n + 2))?;
        labels.push(record.get(0).unwrap_or_default().to_string());
        for (z, &c) in columns.iter().enumerate() {
            let v: f64 = record
                .get(c)
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    format!(
                        "{name} line {}: {} is not a number ({:?})",
                        n + 2,
                        ids[z],
                        record.get(c).unwrap_or_default()
                    )
                })?;
            values[z].push(v);
        }
    }
    if labels.is_empty() {
        return Err(format!("{name}: no hours"));
    }
    Ok((labels, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_year_has_every_hour_of_2023_at_ten_zones() {
        let year = Year::shipped_2023().unwrap();
        assert_eq!(year.len(), 8760);
        assert_eq!(year.zones.len(), 10);
        assert_eq!(year.hour_of("2023-01-01").unwrap(), 0);
        assert_eq!(year.hour_of("2023-12-31T23").unwrap(), 8759);
        assert!(year.hour_of("2024-01-01").is_err());
        // CAISO's first hour: 140.32825 USD/MWh.
        let caiso = year.zone_index("US-CAL-CISO").unwrap();
        assert!((year.hours[caiso].price_per_kwh[0] - 0.14032825).abs() < 1e-12);
        // Frankfurt's weather station is nearest to Frankfurt.
        let de = year.zone_index("DE-LU").unwrap();
        assert_eq!(year.nearest_zone(50.11, 8.68), de);
    }

    #[test]
    fn a_bad_value_is_named_by_file_line_and_zone() {
        let files = YearFiles {
            zones: "zone,city,lat,lon\nA,a,0,0\n",
            price_usd_per_mwh: "utc_hour,A\nh0,1\n",
            carbon_g_per_kwh: "utc_hour,A\nh0,1\n",
            temperature_c: "utc_hour,A\nh0,x\n",
            humidity_pct: "utc_hour,A\nh0,1\n",
        };
        let err = Year::parse(&files).unwrap_err();
        assert!(err.contains("temperature_c.csv line 2: A"), "{err}");
    }
}
