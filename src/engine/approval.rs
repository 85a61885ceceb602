//! Plan approval: the digest of a whole plan, and what an approving run
//! (`spec.approvedPlan.digest`) is held to. A person reviews a Plan run's plan and commits
//! its digest; the approving run applies that exact plan, with its limits lifted to the
//! plan's size, or nothing at all when the plan changed since. Pure.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{Limits, PlannedCounts, WhenExceeded};

use super::error::RunError;

/// One planned write, in the terms that identify it across runs: what it does, to whom (a
/// SCIM id, stable on both servers) and the values it writes. Never a timestamp, an index
/// into a listing or anything else that differs between two runs planning the same thing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// The action as the status names it: Link, CreateUser, DeleteAccount, …
    pub action: &'static str,
    /// The SCIM id of the user or account it acts on.
    pub target: String,
    /// What it writes, as `attribute=value` (empty for a removal).
    pub writes: Vec<String>,
}

impl Change {
    pub fn new(action: &'static str, target: impl Into<String>, writes: Vec<String>) -> Self {
        Change {
            action,
            target: target.into(),
            writes,
        }
    }
}

/// The digest of a plan, as `sha256:` and 64 hex digits: SHA-256 over the SHA-256 of each
/// change (its JSON line: JSON quoting keeps values with commas or newlines unambiguous),
/// those sorted. The same changes in any order give the same digest, and the changes are
/// never all held at once: at 100,000 links they were 30 MB, their hashes are 3.2 MB.
pub fn digest(changes: impl Iterator<Item = Change>) -> String {
    let mut line = Vec::new();
    let mut hashes: Vec<[u8; 32]> = changes
        .map(|c| {
            line.clear();
            serde_json::to_writer(&mut line, &c).expect("a change serializes");
            Sha256::digest(&line).into()
        })
        .collect();
    hashes.sort_unstable();
    let mut hasher = Sha256::new();
    for h in &hashes {
        hasher.update(h);
    }
    format!("sha256:{:x}", hasher.finalize())
}

/// The limits a run is held to, decided before any write. Without an approval: the
/// policy's. With one whose digest is the plan's: exactly the plan's creates and deletes,
/// so an approved plan goes through and not one write more. With any other digest: the
/// run must not write (`PlanChanged`).
pub fn limits_for(
    approved: Option<&str>,
    digest: &str,
    planned: &PlannedCounts,
    policy: Option<&Limits>,
) -> Result<Option<Limits>, RunError> {
    let Some(approved) = approved else {
        return Ok(policy.cloned());
    };
    if approved != digest {
        return Err(RunError::PlanChanged {
            approved: approved.to_string(),
            planned: digest.to_string(),
        });
    }
    Ok(Some(Limits {
        max_creates: Some(planned.creates.max(0)),
        max_deletes: Some(planned.deletes.max(0)),
        max_changes: Some((planned.creates + planned.deletes).max(0)),
        when_exceeded: WhenExceeded::Abort,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::{self, LimitCheck};

    fn changes() -> Vec<Change> {
        vec![
            Change::new("Link", "a-1", vec!["member=u-1".into()]),
            Change::new("CreateUser", "a-2", vec!["userName=erin".into()]),
            Change::new("DeleteUser", "u-3", vec![]),
        ]
    }

    #[test]
    fn the_same_plan_in_another_order_has_the_same_digest() {
        let d = digest(changes().into_iter());
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64, "{d}");
        assert!(
            d[7..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let mut reversed = changes();
        reversed.reverse();
        assert_eq!(digest(reversed.into_iter()), d);
        let mut rotated = changes();
        rotated.rotate_left(1);
        assert_eq!(digest(rotated.into_iter()), d);
    }

    #[test]
    fn any_change_to_the_plan_changes_the_digest() {
        let d = digest(changes().into_iter());
        let variants: [fn(&mut Vec<Change>); 6] = [
            |c| c[0].action = "CreateUser",
            |c| c[1].target = "a-9".into(),
            |c| c[1].writes[0] = "userName=erin2".into(),
            |c| c[2].writes.push("active=false".into()),
            |c| {
                c.pop();
            },
            |c| c.push(Change::new("RemoveRecord", "u-4", vec![])),
        ];
        for (i, vary) in variants.iter().enumerate() {
            let mut c = changes();
            vary(&mut c);
            assert_ne!(digest(c.into_iter()), d, "variant {i}");
        }
        // Values are quoted: moving a separator between fields is another plan.
        let a = digest([Change::new("Link", "a", vec!["b,c".into()])].into_iter());
        let b = digest([Change::new("Link", "a,b", vec!["c".into()])].into_iter());
        assert_ne!(a, b);
        assert_ne!(digest(std::iter::empty()), d);
    }

    fn planned(creates: i64, deletes: i64) -> PlannedCounts {
        PlannedCounts {
            creates,
            deletes,
            links: 3,
            updates: 0,
        }
    }

    #[test]
    fn without_approval_the_policy_limits_hold() {
        let policy = Limits {
            max_creates: Some(1),
            max_deletes: None,
            max_changes: None,
            when_exceeded: WhenExceeded::ApplyUpToLimit,
        };
        let got = limits_for(None, "sha256:x", &planned(5, 0), Some(&policy)).unwrap();
        assert_eq!(got, Some(policy));
        assert_eq!(
            limits_for(None, "sha256:x", &planned(5, 0), None).unwrap(),
            None
        );
    }

    #[test]
    fn an_approved_plan_is_allowed_exactly_its_size() {
        let plan = planned(500, 7);
        let got = limits_for(Some("sha256:ab"), "sha256:ab", &plan, None)
            .unwrap()
            .unwrap();
        assert_eq!((got.max_creates, got.max_deletes), (Some(500), Some(7)));
        assert_eq!(limits::check(500, 7, Some(&got)), LimitCheck::Within);
        // Not one more than planned.
        assert!(matches!(
            limits::check(501, 7, Some(&got)),
            LimitCheck::Abort { .. }
        ));
    }

    #[test]
    fn a_changed_plan_is_refused_with_both_digests() {
        let e = limits_for(Some("sha256:old"), "sha256:new", &planned(1, 0), None).unwrap_err();
        assert_eq!(e.reason(), "PlanChanged");
        let msg = e.to_string();
        assert!(
            msg.contains("sha256:old") && msg.contains("sha256:new"),
            "{msg}"
        );
    }
}
