//! Limits (`maxCreates`, `maxDeletes`, `maxChanges` = creates + deletes): the check of a whole plan before any write, and
//! the allowances that keep the apply exact under any number of parallel workers. The
//! pipeline ([`super::pipeline`]) does both.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::api::{AppliedLimits, Limits, PlannedCounts, WhenExceeded};

/// How many more writes of one kind a run may make. Workers reserve before each write;
/// the sum of grants minus releases never exceeds the limit, whatever the interleaving.
#[derive(Debug)]
pub struct Allowance {
    /// None: unlimited.
    limit: Option<u64>,
    remaining: AtomicU64,
    granted: AtomicU64,
    refused: AtomicBool,
}

impl Allowance {
    /// An allowance of `limit` writes; None is unlimited.
    pub fn new(limit: Option<u64>) -> Self {
        Allowance {
            limit,
            remaining: AtomicU64::new(limit.unwrap_or(u64::MAX)),
            granted: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }
    }

    /// Reserves `n` writes, all or nothing. False (and nothing reserved) when fewer remain.
    pub fn try_reserve(&self, n: u64) -> bool {
        if self.limit.is_none() {
            self.granted.fetch_add(n, Ordering::Relaxed);
            return true;
        }
        let ok = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(n))
            .is_ok();
        if ok {
            self.granted.fetch_add(n, Ordering::Relaxed);
        } else {
            self.refused.store(true, Ordering::Release);
        }
        ok
    }

    /// Returns `n` writes that definitely did not happen (the server refused them). Never
    /// call it for an ambiguous outcome such as a timeout: the write may have happened.
    pub fn release(&self, n: u64) {
        self.granted.fetch_sub(n, Ordering::Relaxed);
        if self.limit.is_some() {
            self.remaining.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Writes reserved and not released.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Acquire)
    }

    /// True once a reservation was refused: the run stopped at this limit.
    pub fn limit_reached(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// The limit, None when unlimited.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// How many of `planned` writes this allowance lets through.
    fn cap(&self, planned: i64) -> u64 {
        let planned = planned.max(0) as u64;
        self.limit.map_or(planned, |m| planned.min(m))
    }
}

/// The run's allowances of creates and deletes (deactivations count as deletes), and of
/// both together. A write takes one unit of its kind and one of `changes`, or none.
#[derive(Debug)]
pub struct Allowances {
    creates: Allowance,
    deletes: Allowance,
    changes: Allowance,
}

/// The kind of a limited write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Create,
    Delete,
}

impl Allowances {
    pub fn new(limits: Option<&Limits>) -> Self {
        let (max_creates, max_deletes, max_changes) = limits_of(limits);
        Allowances {
            creates: Allowance::new(max_creates),
            deletes: Allowance::new(max_deletes),
            changes: Allowance::new(max_changes),
        }
    }

    fn of(&self, kind: Kind) -> &Allowance {
        match kind {
            Kind::Create => &self.creates,
            Kind::Delete => &self.deletes,
        }
    }

    /// Reserves `n` writes of `kind`, all or nothing, within both its own limit and
    /// `maxChanges`.
    pub fn try_reserve(&self, kind: Kind, n: u64) -> bool {
        let own = self.of(kind);
        if !own.try_reserve(n) {
            return false;
        }
        if !self.changes.try_reserve(n) {
            own.release(n);
            return false;
        }
        true
    }

    /// Gives back `n` writes of `kind` that certainly did not happen.
    pub fn release(&self, kind: Kind, n: u64) {
        self.of(kind).release(n);
        self.changes.release(n);
    }

    /// Writes of `kind` reserved and not released.
    pub fn granted(&self, kind: Kind) -> u64 {
        self.of(kind).granted()
    }

    /// The writes the apply attempts: links and updates (not limited), creates and
    /// deletes up to their limits. The apply stage's progress total.
    pub fn writes_to_apply(&self, planned: &PlannedCounts) -> u64 {
        let limited = self.creates.cap(planned.creates) + self.deletes.cap(planned.deletes);
        (planned.links + planned.updates).max(0) as u64 + self.changes.cap(limited as i64)
    }

    /// True once an allowance refused a write.
    pub fn limit_reached(&self) -> bool {
        self.creates.limit_reached() || self.deletes.limit_reached() || self.changes.limit_reached()
    }
}

/// What the plan-versus-limits check decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitCheck {
    /// The plan fits.
    Within,
    /// The plan exceeds a limit and `whenExceeded` is Abort: apply nothing.
    Abort { message: String },
    /// The plan exceeds a limit and `whenExceeded` is ApplyUpToLimit.
    UpToLimit { message: String },
}

impl LimitCheck {
    pub fn exceeded(&self) -> bool {
        !matches!(self, LimitCheck::Within)
    }
    pub fn message(&self) -> Option<&str> {
        match self {
            LimitCheck::Within => None,
            LimitCheck::Abort { message } | LimitCheck::UpToLimit { message } => Some(message),
        }
    }
}

fn limit_of(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// The creates, deletes and changes limits; None is unlimited.
fn limits_of(limits: Option<&Limits>) -> (Option<u64>, Option<u64>, Option<u64>) {
    match limits {
        None => (None, None, None),
        Some(l) => (
            limit_of(l.max_creates),
            limit_of(l.max_deletes),
            limit_of(l.max_changes),
        ),
    }
}

/// The limits as the status shows them.
pub fn applied(limits: Option<&Limits>) -> AppliedLimits {
    AppliedLimits {
        max_creates: limits.and_then(|l| l.max_creates),
        max_deletes: limits.and_then(|l| l.max_deletes),
        max_changes: limits.and_then(|l| l.max_changes),
    }
}

/// Checks a whole plan against the limits, before any write. The message names the planned
/// and allowed numbers of every exceeded limit.
pub fn check(planned_creates: u64, planned_deletes: u64, limits: Option<&Limits>) -> LimitCheck {
    let Some(l) = limits else {
        return LimitCheck::Within;
    };
    let (mc, md, mx) = limits_of(Some(l));
    let mut parts = Vec::new();
    if let Some(m) = mc.filter(|&m| planned_creates > m) {
        parts.push(format!("planned {planned_creates} creates, allowed {m}"));
    }
    if let Some(m) = md.filter(|&m| planned_deletes > m) {
        parts.push(format!("planned {planned_deletes} deletes, allowed {m}"));
    }
    let changes = planned_creates + planned_deletes;
    if let Some(m) = mx.filter(|&m| changes > m) {
        parts.push(format!(
            "planned {changes} changes (creates + deletes), allowed {m}"
        ));
    }
    if parts.is_empty() {
        return LimitCheck::Within;
    }
    let message = parts.join("; ");
    match l.when_exceeded {
        WhenExceeded::Abort => LimitCheck::Abort { message },
        WhenExceeded::ApplyUpToLimit => LimitCheck::UpToLimit { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits(c: Option<i64>, d: Option<i64>, w: WhenExceeded) -> Limits {
        Limits {
            max_creates: c,
            max_deletes: d,
            max_changes: None,
            when_exceeded: w,
        }
    }

    #[test]
    fn max_changes_bounds_creates_and_deletes_together() {
        let mut l = limits(Some(10), Some(10), WhenExceeded::Abort);
        l.max_changes = Some(12);
        assert_eq!(check(6, 6, Some(&l)), LimitCheck::Within);
        assert_eq!(
            check(7, 6, Some(&l)).message(),
            Some("planned 13 changes (creates + deletes), allowed 12")
        );
        let a = Allowances::new(Some(&l));
        assert!(a.try_reserve(Kind::Create, 10));
        assert!(!a.try_reserve(Kind::Create, 1), "maxCreates");
        assert!(a.try_reserve(Kind::Delete, 2));
        assert!(!a.try_reserve(Kind::Delete, 1), "maxChanges");
        assert!(a.limit_reached());
        // A refused write of one kind takes nothing from the other.
        assert_eq!(a.granted(Kind::Create), 10);
        assert_eq!(a.granted(Kind::Delete), 2);
        a.release(Kind::Create, 1);
        assert!(a.try_reserve(Kind::Delete, 1));
        let planned = PlannedCounts {
            creates: 20,
            deletes: 20,
            links: 3,
            updates: 0,
        };
        assert_eq!(a.writes_to_apply(&planned), 3 + 12);
    }

    /// Threads race creates and deletes under all three limits: no limit is ever passed
    /// and, demand exceeding them, maxChanges is used up exactly.
    #[test]
    fn threads_racing_both_kinds_never_pass_max_changes() {
        let mut l = limits(Some(40), Some(30), WhenExceeded::ApplyUpToLimit);
        l.max_changes = Some(50);
        let a = Arc::new(Allowances::new(Some(&l)));
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let kind = if t % 2 == 0 {
                        Kind::Create
                    } else {
                        Kind::Delete
                    };
                    (0..20).filter(|_| a.try_reserve(kind, 1)).count() as u64
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 50);
        assert!(a.granted(Kind::Create) <= 40 && a.granted(Kind::Delete) <= 30);
        assert_eq!(a.granted(Kind::Create) + a.granted(Kind::Delete), 50);
    }

    #[test]
    fn check_within_and_unlimited() {
        assert_eq!(check(5, 5, None), LimitCheck::Within);
        let l = limits(Some(5), None, WhenExceeded::Abort);
        assert_eq!(check(5, 1_000_000, Some(&l)), LimitCheck::Within);
    }

    #[test]
    fn check_abort_names_planned_and_allowed() {
        let l = limits(Some(100), Some(20), WhenExceeded::Abort);
        assert_eq!(
            check(120, 21, Some(&l)),
            LimitCheck::Abort {
                message: "planned 120 creates, allowed 100; planned 21 deletes, allowed 20".into()
            }
        );
        assert_eq!(
            check(100, 21, Some(&l)).message(),
            Some("planned 21 deletes, allowed 20")
        );
    }

    #[test]
    fn check_up_to_limit() {
        let l = limits(Some(0), None, WhenExceeded::ApplyUpToLimit);
        let c = check(1, 0, Some(&l));
        assert!(c.exceeded());
        assert!(matches!(c, LimitCheck::UpToLimit { .. }));
    }

    #[test]
    fn reserve_is_all_or_nothing_and_release_returns() {
        let b = Allowance::new(Some(3));
        assert!(b.try_reserve(2));
        assert!(!b.try_reserve(2));
        assert!(b.limit_reached());
        assert!(b.try_reserve(1));
        assert!(!b.try_reserve(1));
        b.release(1);
        assert!(b.try_reserve(1));
        assert_eq!(b.granted(), 3);
    }

    #[test]
    fn zero_limit_grants_nothing_and_unlimited_everything() {
        let b = Allowance::new(Some(0));
        assert!(!b.try_reserve(1));
        assert_eq!(b.granted(), 0);
        let u = Allowance::new(None);
        for _ in 0..1000 {
            assert!(u.try_reserve(7));
        }
        assert_eq!(u.granted(), 7000);
        assert!(!u.limit_reached());
    }

    /// Many OS threads race for a small allowance: exactly the limit is granted.
    #[test]
    fn threads_hammering_get_exactly_the_limit() {
        for limit in [0u64, 1, 37, 100, 999] {
            let b = Arc::new(Allowance::new(Some(limit)));
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || {
                        let mut mine = 0u64;
                        for _ in 0..200 {
                            if b.try_reserve(1) {
                                mine += 1;
                            }
                            std::hint::spin_loop();
                        }
                        mine
                    })
                })
                .collect();
            let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(total, limit.min(16 * 200), "limit {limit}");
            assert_eq!(b.granted(), total);
        }
    }

    /// Property: for random limits, worker counts and demands, single reservations grant
    /// exactly min(limit, demand), and batch reservations never exceed the limit while
    /// leaving less than one batch unused.
    #[test]
    fn random_limits_workers_and_batches() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..40 {
            let limit = rng.random_range(0..300u64);
            let workers = rng.random_range(1..24usize);
            let per_worker = rng.random_range(0..40u64);
            let batch = rng.random_range(1..5u64);
            let b = Arc::new(Allowance::new(Some(limit)));
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || {
                        (0..per_worker).filter(|_| b.try_reserve(batch)).count() as u64 * batch
                    })
                })
                .collect();
            let granted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let demand = workers as u64 * per_worker * batch;
            assert!(granted <= limit, "{granted} > {limit}");
            assert_eq!(granted, b.granted());
            if batch == 1 {
                assert_eq!(granted, limit.min(demand));
            } else if demand >= limit {
                assert!(
                    limit - granted < batch,
                    "limit {limit} granted {granted} batch {batch}"
                );
            }
        }
    }

    /// Tokio tasks reserve, "fail" some writes (released) and retry: the grants that stick
    /// never exceed the limit, and the whole limit is used when demand exceeds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tasks_with_releases_never_exceed_the_limit() {
        let limit = 37u64;
        let b = Arc::new(Allowance::new(Some(limit)));
        let kept = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for t in 0..32u64 {
            let b = b.clone();
            let kept = kept.clone();
            set.spawn(async move {
                for i in 0..50u64 {
                    // reserve batches of 1..=3
                    let n = 1 + (t + i) % 3;
                    if b.try_reserve(n) {
                        tokio::task::yield_now().await;
                        if (t * 31 + i) % 5 == 0 {
                            b.release(n); // the server refused: not a write
                        } else {
                            kept.fetch_add(n, Ordering::SeqCst);
                        }
                    }
                    tokio::task::yield_now().await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let kept = kept.load(Ordering::SeqCst);
        assert!(kept <= limit, "kept {kept} > {limit}");
        assert_eq!(b.granted(), kept);
        // Accounting is exact: what was not kept is still available, and not one more.
        assert!(b.try_reserve(limit - kept));
        assert!(!b.try_reserve(1));
        assert!(b.limit_reached());
    }
}
