//! Online move of a tenant's data to another tier or server: copy, catch
//! up, freeze, switch, verify, drop.
//!
//! 1. **Copy** while the tenant keeps working: its data chain (verbatim,
//!    same seq and hashes), collections and records, page by page, into the
//!    target copy. The source's chain head when the copy began is the
//!    watermark.
//! 2. **Catch up**: every write commits with a data-chain entry naming what
//!    it changed (`tenantry::record::touched`), so the entries after the
//!    watermark list the collections and records to copy again, as they are
//!    now (or to remove). Rounds repeat while the tail shrinks.
//! 3. **Freeze**: the source is sealed — writes in flight finish, later ones
//!    (on any instance) wait and retry — and a last round copies the tail.
//!    Only this tenant's writes pause, and only for that round.
//! 4. **Switch**: counts compared, then the control store points the tenant
//!    at the target (only if it still points at the source). Waiting
//!    writers look the tenant up again and continue on the target.
//! 5. **Verify**: every record of the source is on the target as it is,
//!    unless the target changed it since the switch.
//! 6. **Drop** the source after a grace period (instances that cached the
//!    old placement read its frozen copy meanwhile).
//!
//! A run cut short before the switch starts the copy over (the target is
//! cleared; a sealed source stays sealed until the next freeze); after the
//! switch it goes on from verification. A move that fails unseals the
//! source and clears the target: the tenant stays where it was.

use super::pages::{ChainTail, PAGE, Records};
use super::{JobError, JobResult, Run};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Instant;
use tenantry::audit::AuditFilter;
use tenantry::record::{Touched, touched};
use tenantry::store::{Restore, StoreError, TenantData};
use tenantry::{Isolation, RecordId, Tenant};

/// Catch-up rounds before the freeze, at most; fewer once the tail is short.
const MAX_ROUNDS: usize = 10;
/// A tail this short is copied inside the freeze.
const SHORT_TAIL: usize = 200;

#[derive(Debug, Deserialize)]
struct Params {
    isolation: Isolation,
    server: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Set once the control store points at the target.
    switched: bool,
    from_isolation: Option<Isolation>,
    from_server: Option<String>,
    /// The data chain's seq at the switch: later entries are the target's own.
    switch_seq: i64,
    freeze_ms: u64,
}

pub async fn run(run: &mut Run<'_>) -> JobResult<Option<String>> {
    let p: Params = run.params()?;
    let s = run.services;
    let tenant = s
        .core
        .store
        .tenant_by_id(run.job.tenant_id)
        .await?
        .ok_or_else(|| JobError::Fatal("the tenant no longer exists".into()))?;
    let mut state: State = serde_json::from_value(run.job.state.clone()).unwrap_or_default();
    let at_target = tenant.isolation == p.isolation && tenant.placement == p.server;
    let (source, target) = if state.switched && at_target {
        let mut source = tenant.clone();
        source.isolation = state.from_isolation.unwrap_or(tenant.isolation);
        source.placement = state.from_server.clone();
        (source, tenant)
    } else if at_target {
        return Err(JobError::Fatal("the tenant's data is there already".into()));
    } else {
        let mut target = tenant.clone();
        target.isolation = p.isolation;
        target.placement = p.server.clone();
        match move_data(run, &tenant, &target).await {
            Ok(s) => state = s,
            Err(JobError::Fatal(e)) => {
                roll_back(run, &tenant, &target).await;
                return Err(JobError::Fatal(e));
            }
            Err(e) => {
                if run.is_last_attempt() {
                    roll_back(run, &tenant, &target).await;
                }
                return Err(e);
            }
        }
        (tenant, target)
    };
    run.set_progress(0.9);
    verify(run, &source, &target, state.switch_seq).await?;
    tokio::time::sleep(s.tenants.jobs.source_grace).await;
    match s.core.data.purge(&source).await {
        Ok(()) | Err(StoreError::Absent) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(tenant_id = %target.id, freeze_ms = state.freeze_ms, "tenant moved");
    Ok(None)
}

/// Steps 1 to 4; returns the state after the switch.
async fn move_data(run: &mut Run<'_>, tenant: &Tenant, target: &Tenant) -> JobResult<State> {
    let s = run.services;
    let from = s.core.data.handle(tenant).await?;
    s.core.data.provision(target).await?;
    let to = s.core.data.handle(target).await?;
    // What an earlier, cut-short run left is copied anew.
    to.clear().await?;
    to.unseal().await?;

    let mut mark = copy_chain(from.as_ref(), to.as_ref()).await?;
    let defs = from.collections().await?;
    to.restore(&Restore {
        collections: defs.clone(),
        ..Restore::default()
    })
    .await?;
    // What existed at the mark, and no more: each collection up to its
    // largest id as of now (opened after the mark, so it covers every
    // record there was then). Later records are the catch-up's, from the
    // chain's tail.
    let total = from.usage().await?.records.max(1) as f64;
    let mut copied = 0u64;
    for def in &defs {
        let mut records = Records::open(from.as_ref(), &def.name).await?;
        let mut page = Vec::with_capacity(PAGE as usize);
        while let Some(r) = records.next().await? {
            page.push((def.name.clone(), r));
            if page.len() == PAGE as usize {
                copied += page.len() as u64;
                to.restore(&Restore {
                    records: std::mem::take(&mut page),
                    ..Restore::default()
                })
                .await?;
                run.set_progress(0.7 * copied as f64 / total);
            }
        }
        to.restore(&Restore {
            records: page,
            ..Restore::default()
        })
        .await?;
    }
    for round in 0..MAX_ROUNDS {
        let (next, caught) = catch_up(from.as_ref(), to.as_ref(), mark).await?;
        mark = next;
        run.set_progress(0.7 + 0.1 * (round + 1) as f64 / MAX_ROUNDS as f64);
        if caught < SHORT_TAIL {
            break;
        }
    }
    run.set_progress(0.8);

    let frozen = Instant::now();
    from.seal().await?;
    let (switch_seq, _) = catch_up(from.as_ref(), to.as_ref(), mark).await?;
    let (a, b) = (from.usage().await?, to.usage().await?);
    let (ca, cb) = (
        from.collections().await?.len(),
        to.collections().await?.len(),
    );
    if a.records != b.records || ca != cb {
        return Err(JobError::Fatal(format!(
            "the copy differs from the source: {} records and {ca} collections against {} and {cb}",
            a.records, b.records
        )));
    }
    let audit = run.audit(
        "tenant.move",
        format!(
            "tenants/{} {}{} -> {}{}",
            tenant.id,
            tenant.isolation.as_str(),
            tenant
                .placement
                .as_deref()
                .map(|p| format!("@{p}"))
                .unwrap_or_default(),
            target.isolation.as_str(),
            target
                .placement
                .as_deref()
                .map(|p| format!("@{p}"))
                .unwrap_or_default(),
        ),
    );
    let mut switched = target.clone();
    switched.updated_at = run.services.core.clock.now();
    s.core
        .store
        .relocate_tenant(tenant, &switched, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                JobError::Fatal("the tenant was deleted or moved meanwhile".into())
            }
            other => other.into(),
        })?;
    s.core.forget_tenant();
    let state = State {
        switched: true,
        from_isolation: Some(tenant.isolation),
        from_server: tenant.placement.clone(),
        switch_seq,
        freeze_ms: frozen.elapsed().as_millis() as u64,
    };
    run.checkpoint(json!(state)).await?;
    metrics::histogram!("tenant_move_freeze_seconds").record(frozen.elapsed().as_secs_f64());
    Ok(state)
}

/// Copies the source's data-chain entries after the target's head, as they
/// are, up to the source's head when the copy began (later ones are the
/// catch-up's); returns the new head. The target's own head must be the
/// source's entry at that seq (a shared tier keeps a chain from an earlier
/// stay).
async fn copy_chain(from: &dyn TenantData, to: &dyn TenantData) -> JobResult<i64> {
    let after = match to.audit_head().await? {
        None => 0,
        Some((seq, hash)) => {
            let same = from
                .list_audit(&AuditFilter::default(), seq - 1, 1)
                .await?
                .first()
                .is_some_and(|(s, e)| *s == seq && e.hash == hash);
            if !same {
                return Err(JobError::Fatal(
                    "the target holds another audit chain of this tenant".into(),
                ));
            }
            seq
        }
    };
    let mut chain = ChainTail::open(from, after).await?;
    while let Some(page) = chain.next().await? {
        to.restore(&Restore {
            audit: page,
            ..Restore::default()
        })
        .await?;
        tokio::task::yield_now().await;
    }
    Ok(chain.at)
}

/// One catch-up round: what the entries after `mark` touched, copied again
/// as it is now, with the entries, up to the chain's head when the round
/// began (entries written meanwhile are the next round's: a round that
/// read to the end would never end under steady writes). Returns the new
/// mark and how many entries there were.
async fn catch_up(
    from: &dyn TenantData,
    to: &dyn TenantData,
    mark: i64,
) -> JobResult<(i64, usize)> {
    let mut chain = ChainTail::open(from, mark).await?;
    let mut seen = 0;
    while let Some(entries) = chain.next().await? {
        seen += entries.len();
        let keys: BTreeSet<Touched> = entries
            .iter()
            .filter_map(|(_, e)| touched(&e.resource))
            .collect();
        let mut restore = Restore {
            audit: entries,
            ..Restore::default()
        };
        for key in keys {
            match key {
                Touched::Collection(name) => {
                    if let Some(def) = from.collection(&name).await? {
                        restore.collections.push(def);
                    }
                }
                Touched::Record(collection, id) => match from.record(&collection, id).await? {
                    Some(r) => restore.records.push((collection, r)),
                    None => restore.removed.push((collection, id)),
                },
            }
        }
        to.restore(&restore).await?;
        tokio::task::yield_now().await;
    }
    Ok((chain.at, seen))
}

/// Step 5: every record of the source (sealed: it no longer changes) is
/// on the target as it is, unless the target changed it since the switch.
/// Both copies are read in id order, collection by collection, and merged:
/// a page per statement, no lookup per record. The target's changes are
/// read after the comparison, so a write that lands while it runs is known
/// by then. (That the target holds nothing more was checked by the counts
/// at the switch, before it took writes.)
async fn verify(run: &Run<'_>, source: &Tenant, target: &Tenant, switch_seq: i64) -> JobResult<()> {
    let s = run.services;
    let from = s.core.data.handle(source).await?;
    let to = s.core.data.handle(target).await?;
    let mut differing = Vec::new();
    let mut compared = 0u64;
    for def in from.collections().await? {
        let mut theirs = Records::open(to.as_ref(), &def.name).await?;
        let mut ours = Records::open(from.as_ref(), &def.name).await?;
        while let Some(r) = ours.next().await? {
            while theirs.peek().await?.is_some_and(|t| t.id < r.id) {
                theirs.next().await?;
            }
            let same = match theirs.peek().await? {
                Some(t) if t.id == r.id => theirs.next().await?.as_ref() == Some(&r),
                _ => false,
            };
            if !same {
                differing.push((def.name.clone(), r.id));
            }
            compared += 1;
        }
    }
    let changed = changed_since(to.as_ref(), switch_seq).await?;
    let unexplained: Vec<_> = differing.iter().filter(|k| !changed.contains(*k)).collect();
    if let Some((c, id)) = unexplained.first() {
        return Err(JobError::Fatal(format!(
            "verification failed: {} of {compared} records differ on the target (first: {c}/{id}); the source is kept",
            unexplained.len()
        )));
    }
    Ok(())
}

/// The records the copy's chain says were changed after `seq` (up to its
/// head now: later writes came after the comparison).
async fn changed_since(data: &dyn TenantData, seq: i64) -> JobResult<BTreeSet<(String, RecordId)>> {
    let mut changed = BTreeSet::new();
    let mut chain = ChainTail::open(data, seq).await?;
    while let Some(page) = chain.next().await? {
        changed.extend(page.iter().filter_map(|(_, e)| match touched(&e.resource) {
            Some(Touched::Record(c, id)) => Some((c, id)),
            _ => None,
        }));
    }
    Ok(changed)
}

/// A failed move leaves the tenant where it was: source writable again,
/// target emptied (its audit chain stays, append-only; a later move
/// continues it).
async fn roll_back(run: &Run<'_>, source: &Tenant, target: &Tenant) {
    let s = run.services;
    if let Ok(from) = s.core.data.handle(source).await
        && let Err(e) = from.unseal().await
    {
        tracing::warn!(tenant_id = %source.id, error = %e, "unsealing the source of a failed move failed");
    }
    match s.core.data.purge(target).await {
        Ok(()) | Err(StoreError::Absent) => {}
        Err(e) => {
            tracing::warn!(tenant_id = %source.id, error = %e, "removing a failed move's copy failed")
        }
    }
}
