//! Checks of the numbers a configuration sets, run when a server starts:
//! the first offending setting is named with its path (`dispatch.time_scale:
//! must be a finite number >= 0, got NaN`). Pure.

/// Each of `settings` (named `{section}{name}`) a finite number ≥ 0.
pub fn non_negative(section: &str, settings: &[(&str, f64)]) -> Result<(), String> {
    match settings.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        Some((name, v)) => Err(format!(
            "{section}{name}: must be a finite number >= 0, got {v}"
        )),
        None => Ok(()),
    }
}

/// Each of `settings` (named `{section}{name}`) a positive, finite number of seconds.
pub fn positive_seconds(section: &str, settings: &[(&str, f64)]) -> Result<(), String> {
    match settings.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        Some((name, v)) => Err(format!(
            "{section}{name}: must be a positive number of seconds, got {v}"
        )),
        None => Ok(()),
    }
}
