//! The gRPC API (`proto/edgeplan/v1/edgeplan.proto`): generated types, and
//! conversions between them and the core's types.

pub mod convert;
pub mod intake;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("edgeplan.v1");
}

/// The encoded descriptor set of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/edgeplan_descriptor.bin"));
