//! AIP-158 paging for the list calls: page sizes with a default and a
//! ceiling, and page tokens. A token is opaque to clients; it carries what
//! the next page needs to follow on exactly (and, for the inventory, the
//! version and the filter the first page was read with).

use tonic::Status;

use super::errors::{self, Reason};
use edgeplan_api::pb;

/// `page_size` as served: `default` for 0, at most `max`.
pub fn size(asked: u32, default: usize, max: usize) -> usize {
    match asked {
        0 => default,
        n => (n as usize).min(max),
    }
}

fn bad_token() -> Status {
    errors::field(
        "page_token",
        "not a token this server gave (start again with an empty page_token)",
    )
}

/// `ListPlans`: the page starts after this plan id.
pub fn plans_after(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("plans-after-")
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(bad_token)
}

pub fn plans_token(last_id: u64) -> String {
    format!("plans-after-{last_id}")
}

/// A page of `GetInventory`: where it starts, how long, which kinds.
pub struct InventoryPage {
    pub offset: usize,
    pub size: usize,
    /// Bit k set: `EntityKind` k asked for; 0: every kind.
    kinds: u32,
    version: u64,
}

impl InventoryPage {
    pub const DEFAULT_SIZE: usize = 1000;
    pub const MAX_SIZE: usize = 10_000;

    /// The page a request asks for, at the inventory's `version` now.
    pub fn read(req: &pb::GetInventoryRequest, version: u64) -> Result<InventoryPage, Status> {
        let mut kinds = 0u32;
        for (i, &k) in req.kinds.iter().enumerate() {
            match pb::EntityKind::try_from(k) {
                Ok(kind) if kind != pb::EntityKind::Unspecified => kinds |= 1 << kind as u32,
                _ => {
                    return Err(errors::field(
                        format!("kinds[{i}]"),
                        format!("{k} is not an entity kind"),
                    ))
                }
            }
        }
        let size = size(req.page_size, Self::DEFAULT_SIZE, Self::MAX_SIZE);
        if req.page_token.is_empty() {
            return Ok(InventoryPage {
                offset: 0,
                size,
                kinds,
                version,
            });
        }
        // inventory-v{version}-k{kinds}-o{offset}
        let parts: Option<(u64, u32, usize)> = (|| {
            let rest = req.page_token.strip_prefix("inventory-v")?;
            let (v, rest) = rest.split_once("-k")?;
            let (k, o) = rest.split_once("-o")?;
            Some((v.parse().ok()?, k.parse().ok()?, o.parse().ok()?))
        })();
        let (read_at, token_kinds, offset) = parts.ok_or_else(bad_token)?;
        if token_kinds != kinds {
            return Err(errors::field(
                "kinds",
                "must be the same on every page as on the first",
            ));
        }
        if read_at != version {
            return Err(errors::error_with(
                Reason::VersionMismatch,
                format!(
                    "the inventory changed while paging (version {read_at} → {version}): \
                     start again from the first page"
                ),
                &[("version", version.to_string())],
            ));
        }
        Ok(InventoryPage {
            offset,
            size,
            kinds,
            version,
        })
    }

    pub fn wants(&self, kind: pb::EntityKind) -> bool {
        self.kinds == 0 || self.kinds & (1 << kind as u32) != 0
    }

    pub fn token_at(&self, offset: usize) -> String {
        format!("inventory-v{}-k{}-o{offset}", self.version, self.kinds)
    }
}
