//! The API's errors. Each carries a readable message for people and, for
//! programs, `google.rpc.ErrorInfo` with a stable reason code (domain
//! [`DOMAIN`]); bad input also carries `google.rpc.BadRequest` with every
//! violation and its field path (the richer error model, via tonic-types).
//! Clients switch on the reason and read the paths, never parse the text.
//!
//! The reasons are part of the contract (README, "gRPC contract"): adding
//! one is compatible, renaming or removing one is a breaking change.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `ErrorInfo.domain` on every edgeplan error.
pub const DOMAIN: &str = "edgeplan.dev";

/// Why a call failed, as a stable code. Each reason goes with one gRPC code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A request field is missing, empty, repeated or out of range.
    InvalidField,
    /// The change would leave an inventory that fails validation (the
    /// same checks as `edgeplan validate`; BadRequest lists every issue).
    InvalidInventory,
    /// A named site, link, region, workload, plan or step does not exist.
    NotFound,
    /// Another entity still refers to the one to delete.
    InUse,
    /// The caller's expected version is not the inventory's: read, retry.
    VersionMismatch,
    /// The plan or step is not in a state that allows this verb.
    PlanState,
    /// Another plan is executing.
    PlanExecuting,
    /// The inventory cannot be planned yet (no sites, an unusable state).
    NotPlannable,
    /// Another replica wrote first, or this one lost its lease: retry.
    WriteConflict,
    /// A server limit was reached (open streams).
    Limit,
    /// The store or the telemetry log cannot be written now: retry.
    StoreUnavailable,
    /// The same `request_id` came with a different request.
    RequestIdReused,
    /// No bearer token, a malformed one, or an unknown one.
    Unauthenticated,
    /// The token's role may not call this method.
    PermissionDenied,
    /// A defect or an unexpected failure inside the server.
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::InvalidField,
        Reason::InvalidInventory,
        Reason::NotFound,
        Reason::InUse,
        Reason::VersionMismatch,
        Reason::PlanState,
        Reason::PlanExecuting,
        Reason::NotPlannable,
        Reason::WriteConflict,
        Reason::Limit,
        Reason::StoreUnavailable,
        Reason::RequestIdReused,
        Reason::Unauthenticated,
        Reason::PermissionDenied,
        Reason::Internal,
    ];

    /// The code clients see in `ErrorInfo.reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "INVALID_FIELD",
            Reason::InvalidInventory => "INVALID_INVENTORY",
            Reason::NotFound => "NOT_FOUND",
            Reason::InUse => "IN_USE",
            Reason::VersionMismatch => "VERSION_MISMATCH",
            Reason::PlanState => "PLAN_STATE",
            Reason::PlanExecuting => "PLAN_EXECUTING",
            Reason::NotPlannable => "NOT_PLANNABLE",
            Reason::WriteConflict => "WRITE_CONFLICT",
            Reason::Limit => "LIMIT",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The gRPC code that goes with the reason.
    pub const fn code(self) -> Code {
        match self {
            Reason::InvalidField | Reason::InvalidInventory => Code::InvalidArgument,
            Reason::NotFound => Code::NotFound,
            Reason::InUse | Reason::PlanState | Reason::PlanExecuting | Reason::NotPlannable => {
                Code::FailedPrecondition
            }
            Reason::VersionMismatch | Reason::WriteConflict => Code::Aborted,
            Reason::Limit => Code::ResourceExhausted,
            Reason::StoreUnavailable => Code::Unavailable,
            Reason::RequestIdReused => Code::AlreadyExists,
            Reason::Unauthenticated => Code::Unauthenticated,
            Reason::PermissionDenied => Code::PermissionDenied,
            Reason::Internal => Code::Internal,
        }
    }
}

/// Whether `status` carries `reason` in its `ErrorInfo`.
pub fn has_reason(status: &Status, reason: Reason) -> bool {
    status
        .get_error_details()
        .error_info()
        .is_some_and(|i| i.reason == reason.as_str())
}

/// An error with its reason (and the reason's code).
pub fn error(reason: Reason, message: impl Into<String>) -> Status {
    error_with(reason, message, &[])
}

/// [`error`] with `ErrorInfo.metadata` (e.g. the current version, an id).
pub fn error_with(
    reason: Reason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    Status::with_error_details(
        reason.code(),
        message,
        ErrorDetails::with_error_info(reason.as_str(), DOMAIN, metadata),
    )
}

/// INVALID_ARGUMENT with every violation (field path, description) in
/// BadRequest; the message lists the first 20 of them.
pub fn bad_request(reason: Reason, violations: Vec<(String, String)>) -> Status {
    let text: Vec<String> = violations
        .iter()
        .take(20)
        .map(|(f, d)| {
            if f.is_empty() {
                d.clone()
            } else {
                format!("{f}: {d}")
            }
        })
        .collect();
    let more = violations.len().saturating_sub(20);
    let message = if more > 0 {
        format!("{}; and {more} more", text.join("; "))
    } else {
        text.join("; ")
    };
    let mut details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .map(|(f, d)| FieldViolation::new(f, d))
            .collect::<Vec<_>>(),
    );
    details.set_error_info(reason.as_str(), DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// One bad request field: INVALID_FIELD with its path.
pub fn field(path: impl Into<String>, description: impl Into<String>) -> Status {
    bad_request(
        Reason::InvalidField,
        vec![(path.into(), description.into())],
    )
}

/// NOT_FOUND naming the kind and id (also in `ErrorInfo.metadata`).
pub fn not_found(kind: &str, id: impl ToString, message: impl Into<String>) -> Status {
    error_with(
        Reason::NotFound,
        message,
        &[("kind", kind.to_string()), ("id", id.to_string())],
    )
}

/// INTERNAL from anything displayable.
pub fn internal(e: impl std::fmt::Display) -> Status {
    error(Reason::Internal, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_code_string_and_round_trips_through_a_status() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r:?} repeats a code");
            let s = error(r, "m");
            assert_eq!(s.code(), r.code());
            let info = s.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, r.as_str());
            assert_eq!(info.domain, DOMAIN);
        }
    }

    #[test]
    fn a_bad_request_carries_every_violation_though_the_message_is_cut() {
        let v: Vec<(String, String)> = (0..25)
            .map(|i| (format!("sites[{i}].id"), "must not be empty".to_string()))
            .collect();
        let s = bad_request(Reason::InvalidInventory, v);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().ends_with("and 5 more"), "{}", s.message());
        let br = s.get_details_bad_request().expect("BadRequest");
        assert_eq!(br.field_violations.len(), 25);
        assert_eq!(br.field_violations[24].field, "sites[24].id");
    }
}
