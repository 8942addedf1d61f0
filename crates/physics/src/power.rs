//! A site's power model: its servers' curve and its accelerators' curve,
//! each scaled by its calibration, and from them the site's idle power and
//! the dynamic power one replica adds. The one place a replica's watts are
//! computed (the verifier recomputes them on its own).

use std::collections::BTreeMap;

use edgeplan_model::accelerator_models::{AcceleratorModel, GPU_RESOURCE};
use edgeplan_model::error::{Error, Result};
use edgeplan_model::instance::{Site, Workload};
use edgeplan_model::server_models::ServerModel;

/// A site's accelerators: their model, count and calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceleratorPower {
    pub model: AcceleratorModel,
    pub count: u32,
    pub calibration: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SitePowerModel {
    pub server: ServerModel,
    pub servers: u32,
    pub calibration: f64,
    pub accelerators: Option<AcceleratorPower>,
}

impl SitePowerModel {
    /// The site's model from the catalogues; an unknown model name is an error.
    pub fn of(
        site: &Site,
        servers: &BTreeMap<String, ServerModel>,
        accelerators: &BTreeMap<String, AcceleratorModel>,
    ) -> Result<SitePowerModel> {
        let server = servers
            .get(&site.servers.model)
            .ok_or_else(|| Error::UnknownServerModel {
                name: site.servers.model.clone(),
                known: servers.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let accelerators = match &site.accelerators {
            None => None,
            Some(a) => Some(AcceleratorPower {
                model: accelerators
                    .get(&a.model)
                    .ok_or_else(|| Error::UnknownAcceleratorModel {
                        name: a.model.clone(),
                        known: accelerators.keys().cloned().collect::<Vec<_>>().join(", "),
                    })?
                    .clone(),
                count: a.count,
                calibration: a.calibration,
            }),
        };
        Ok(SitePowerModel {
            server: server.clone(),
            servers: site.servers.count,
            calibration: site.power.calibration,
            accelerators,
        })
    }

    /// Idle power of the servers (calibrated), kW.
    pub fn servers_idle_kw(&self) -> f64 {
        self.servers as f64 * self.server.idle_watts() / 1000.0 * self.calibration
    }

    /// Idle power of the accelerators (calibrated), kW.
    pub fn accelerators_idle_kw(&self) -> f64 {
        self.accelerators.as_ref().map_or(0.0, |a| {
            a.count as f64 * a.model.idle_watts() / 1000.0 * a.calibration
        })
    }

    /// Dynamic kW of one replica's CPU cores on the server curve.
    pub fn replica_cpu_kw(&self, wl: &Workload) -> f64 {
        let cores = wl.resources.get("cpu_cores").copied().unwrap_or(0.0);
        self.server.replica_dynamic_kw(cores, wl.utilization) * self.calibration
    }

    /// Dynamic kW of one replica's accelerators on the accelerator curve
    /// (0 at a site that declares none: its GPUs have no power model).
    pub fn replica_gpu_kw(&self, wl: &Workload) -> f64 {
        let gpus = wl.resources.get(GPU_RESOURCE).copied().unwrap_or(0.0);
        match &self.accelerators {
            Some(a) if gpus > 0.0 => {
                gpus * a.model.dynamic_kw(wl.gpu_utilization()) * a.calibration
            }
            _ => 0.0,
        }
    }

    /// Dynamic kW one replica adds to the site's IT power.
    pub fn replica_dynamic_kw(&self, wl: &Workload) -> f64 {
        self.replica_cpu_kw(wl) + self.replica_gpu_kw(wl)
    }
}
