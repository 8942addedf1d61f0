//! The physics of a site (power curves with PUE, cooling capacity, inlet
//! temperature from the outside air) and the network's topology (routes,
//! RTTs). Pure functions of the model.

pub mod physics;
pub mod power;
pub mod topology;
