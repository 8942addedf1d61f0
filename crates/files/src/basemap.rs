//! The land under the report's site map: Natural Earth's 1:110m physical
//! land polygons (public domain), shipped as `data/land_110m.txt` — one
//! outer ring a line, `lon,lat` pairs — with its source in
//! `data/SOURCES.md`. Pure: parsed once from the text compiled in.

use std::sync::OnceLock;

const LAND_110M: &str = include_str!("../../../data/land_110m.txt");

/// A ring of (lon, lat) points and its bounding box.
pub struct Ring {
    pub points: Vec<(f64, f64)>,
    pub lon: (f64, f64),
    pub lat: (f64, f64),
}

/// Every land ring.
pub fn land() -> &'static [Ring] {
    static RINGS: OnceLock<Vec<Ring>> = OnceLock::new();
    RINGS.get_or_init(|| parse(LAND_110M))
}

fn parse(text: &str) -> Vec<Ring> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let points: Vec<(f64, f64)> = l
                .split_whitespace()
                .filter_map(|p| {
                    let (a, b) = p.split_once(',')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            (points.len() >= 3).then(|| {
                let fold = |f: fn(&(f64, f64)) -> f64| {
                    points
                        .iter()
                        .map(f)
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                            (lo.min(v), hi.max(v))
                        })
                };
                let (lon, lat) = (fold(|p| p.0), fold(|p| p.1));
                Ring { points, lon, lat }
            })
        })
        .collect()
}

/// The rings that reach into a view, their points clamped to it (the
/// chart draws nothing outside its frame).
pub fn in_view(lon: (f64, f64), lat: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    land()
        .iter()
        .filter(|r| r.lon.1 >= lon.0 && r.lon.0 <= lon.1 && r.lat.1 >= lat.0 && r.lat.0 <= lat.1)
        .map(|r| {
            r.points
                .iter()
                .map(|&(x, y)| (x.clamp(lon.0, lon.1), y.clamp(lat.0, lat.1)))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(ring: &[(f64, f64)], (x, y): (f64, f64)) -> bool {
        let mut hit = false;
        for i in 0..ring.len() {
            let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
            if (a.1 > y) != (b.1 > y) && x < a.0 + (y - a.1) / (b.1 - a.1) * (b.0 - a.0) {
                hit = !hit;
            }
        }
        hit
    }

    #[test]
    fn cities_are_on_land_and_the_atlantic_is_not() {
        let on_land = |p| land().iter().any(|r| inside(&r.points, p));
        for (name, p) in [
            ("Dallas", (-96.8, 32.8)),
            ("New York", (-74.0, 40.7)),
            ("Madrid", (-3.7, 40.4)),
            ("Nairobi", (36.8, -1.3)),
        ] {
            assert!(on_land(p), "{name} is not on land");
        }
        assert!(!on_land((-40.0, 30.0)), "the mid-Atlantic is land");
        assert!(land().len() > 100);
    }
}
