//! Telemetry in, effective parameters out: intake with its sanity rules,
//! windows, fitted power curves, ambient forecasts, and alarms. Pure: time
//! is a value passed in.

pub mod alarm;
pub mod effective;
pub mod forecast;
pub mod redfish;
pub mod telemetry;
