//! Import: restores an export file into an empty tenant.
//!
//! First the whole file is checked, writing nothing: the header (format
//! and version), every line (valid JSON of a known item type, naming the
//! file's tenant and no other), the counts the header announces, the size
//! against `import_max_bytes`, and that encrypted config values open with
//! the file's key on this platform. The first problem fails the job with
//! its line, and the target is left exactly as it was.
//!
//! Then the tenant's data copy is sealed (no request writes into it
//! meanwhile, on any instance) and the file is applied in three phases,
//! each resumable after a crash:
//! 1. rows — users and config (control store) and collections and records
//!    (data copy), in batches; each batch's checkpoint commits in the same
//!    control-store transaction as its users, and records are upserted, so
//!    a repeated batch changes nothing;
//! 2. the data chain — the exported entries linked onto the copy's chain
//!    (new ids and hashes, original fields and times); how far it got is
//!    read from the chain itself, which only this job can grow while sealed;
//! 3. the control chain, the request counts, the tenant's name, metadata
//!    and branding, and the `tenant.import` entry, checkpointed like phase 1.
//!
//! A failure in phase 1 that another run would not cure removes what the
//! import wrote and leaves the tenant empty again. Ids regenerated: the
//! tenant's own (the target keeps its id, slug, plan and placement) and
//! the audit entries' (id, seq, hashes); users, collections and records
//! keep theirs.

mod check;

use super::{JobError, JobResult, Run};
use crate::control::tenants::jobs::ImportParams as Params;
use check::{Checked, Lines, Summary, check_file};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry::audit::AuditChain;
use tenantry::portable::{self, Item};
use tenantry::store::{ConfigEntry, ControlImport, PageRequest, Restore, TenantData};
use tenantry::{Tenant, TenantId};

/// Items applied per batch.
const BATCH: usize = 500;

/// Where a resumed run picks up.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    phase: Phase,
    /// Lines of the file applied in this phase.
    line: u64,
    /// The data chain's head seq when phase 2 began.
    data_head: i64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    #[default]
    Rows,
    DataChain,
    ControlChain,
}

pub async fn run(run: &mut Run<'_>) -> JobResult<Option<String>> {
    let params: Params = run.params()?;
    let outcome = import(run, &params).await;
    // A failed import leaves the tenant usable (phase 1 undid itself).
    if matches!(outcome, Err(JobError::Fatal(_)))
        || (matches!(outcome, Err(JobError::Transient(_))) && run.is_last_attempt())
    {
        unseal(run).await;
    }
    if params.remove_file && !matches!(outcome, Err(JobError::Transient(_) | JobError::Interrupted))
    {
        let _ = tokio::fs::remove_file(&params.file).await;
    }
    outcome
}

async fn import(run: &mut Run<'_>, params: &Params) -> JobResult<Option<String>> {
    let s = run.services;
    let target = s
        .core
        .store
        .tenant_by_id(run.job.tenant_id)
        .await?
        .ok_or_else(|| JobError::Fatal("the tenant no longer exists".into()))?;
    let summary = check_file(run, &params.file).await.map_err(|e| match e {
        Checked::Line(e) => JobError::Fatal(format!("invalid import file: {e}")),
        Checked::Job(e) => e,
    })?;
    let data = s.core.data.handle(&target).await?;
    let resumed = !run.job.state.is_null();
    let mut state: State = serde_json::from_value(run.job.state.clone()).unwrap_or_default();
    if !resumed {
        check_empty(run, &target, data.as_ref()).await?;
    }
    data.seal().await?;
    if state.phase == Phase::Rows {
        match apply_rows(run, params, &summary, &target, data.as_ref(), &mut state).await {
            Ok(()) => {}
            Err(JobError::Fatal(e)) => {
                undo(run, &summary, &target, data.as_ref()).await?;
                return Err(JobError::Fatal(e));
            }
            Err(e) => return Err(e),
        }
        state = State {
            phase: Phase::DataChain,
            line: 0,
            data_head: data.audit_head().await?.map_or(0, |(seq, _)| seq),
        };
        run.checkpoint(json!(state)).await?;
    }
    if state.phase == Phase::DataChain {
        relink_data_chain(run, params, &summary, data.as_ref(), &state).await?;
        state = State {
            phase: Phase::ControlChain,
            line: 0,
            data_head: state.data_head,
        };
        run.checkpoint(json!(state)).await?;
    }
    finish_control(run, params, &summary, &target, &mut state).await?;
    data.unseal().await?;
    s.core.forget_tenant();
    Ok(None)
}

async fn unseal(run: &Run<'_>) {
    let s = run.services;
    if let Ok(Some(t)) = s.core.store.tenant_by_id(run.job.tenant_id).await
        && let Ok(data) = s.core.data.handle(&t).await
        && let Err(e) = data.unseal().await
    {
        tracing::warn!(tenant_id = %t.id, error = %e, "unsealing after a failed import failed");
    }
}

/// An import restores into an empty tenant only.
async fn check_empty(run: &Run<'_>, t: &Tenant, data: &dyn TenantData) -> JobResult<()> {
    let s = run.services;
    let users = s
        .core
        .store
        .list_users(
            t,
            &PageRequest {
                after: None,
                limit: 1,
            },
        )
        .await?;
    let config = s.core.store.list_config(t).await?;
    let collections = data.collections().await?;
    if users.is_empty() && config.is_empty() && collections.is_empty() {
        Ok(())
    } else {
        Err(JobError::Fatal(format!(
            "the tenant is not empty ({} config entries, {} collections{}): import into a new tenant",
            config.len(),
            collections.len(),
            if users.is_empty() { "" } else { ", users" }
        )))
    }
}

/// Phase 1: users, config, collections and records.
async fn apply_rows(
    run: &mut Run<'_>,
    params: &Params,
    summary: &Summary,
    target: &Tenant,
    data: &dyn TenantData,
    state: &mut State,
) -> JobResult<()> {
    let s = run.services;
    let source = summary.header.tenant_id;
    let target_key = s.core.store.tenant_wrapped_key(target).await?;
    let (mut lines, _) = Lines::open(&params.file).await.map_err(checked)?;
    let mut control = ControlImport::default();
    let mut rows = Restore::default();
    let mut last = state.line;
    while let Some((no, text)) = lines.next().await.map_err(checked)? {
        if no <= state.line {
            continue;
        }
        last = no;
        match portable::parse_item(no, &text, source).map_err(|e| JobError::Fatal(e.to_string()))? {
            Item::User(u) => control.users.push(u.user()),
            Item::Config(c) => {
                control
                    .config
                    .push(reseal(run, summary, source, target, &target_key, &c)?)
            }
            Item::Collection(c) => rows.collections.push(c.def()),
            Item::Record(r) => rows.records.push((r.collection.clone(), r.record())),
            _ => continue,
        }
        if control.users.len() + control.config.len() + rows.records.len() >= BATCH {
            state.line = last;
            flush(run, target, data, &mut control, &mut rows, state, summary).await?;
        }
    }
    state.line = last;
    flush(run, target, data, &mut control, &mut rows, state, summary).await
}

/// Writes a batch: the data first (upserts: repeating them is harmless),
/// then the users and config with the checkpoint, in one transaction.
async fn flush(
    run: &mut Run<'_>,
    target: &Tenant,
    data: &dyn TenantData,
    control: &mut ControlImport,
    rows: &mut Restore,
    state: &State,
    summary: &Summary,
) -> JobResult<()> {
    data.restore(rows).await.map_err(fatal_conflict)?;
    commit_control(run, target, json!(state), control)
        .await
        .map_err(fatal_conflict)?;
    run.job.state = json!(state);
    run.set_progress(0.8 * state.line as f64 / summary.lines.max(1) as f64);
    *control = ControlImport::default();
    *rows = Restore::default();
    tokio::task::yield_now().await;
    Ok(())
}

/// A duplicate (a user whose email the tenant has, say) will not go away
/// on a retry.
fn fatal_conflict(e: tenantry::store::StoreError) -> JobError {
    match e {
        tenantry::store::StoreError::Conflict(field) => JobError::Fatal(format!(
            "the file conflicts with the tenant's data on `{field}`"
        )),
        other => other.into(),
    }
}

/// An encrypted value, opened with the file's key and sealed with the target's.
fn reseal(
    run: &Run<'_>,
    summary: &Summary,
    source: TenantId,
    target: &Tenant,
    target_key: &[u8],
    c: &portable::ConfigItem,
) -> JobResult<ConfigEntry> {
    let mut entry = c.entry();
    if c.encrypted {
        let bad = || JobError::Fatal(format!("config `{}`: cannot re-seal its value", c.key));
        let key = summary.key.as_deref().ok_or_else(bad)?;
        let sealed = c.value.as_str().ok_or_else(bad)?;
        let plain = run
            .services
            .core
            .keyring
            .open_value(source, key, &c.key, sealed)
            .map_err(|_| bad())?;
        let resealed = run
            .services
            .core
            .keyring
            .seal_value(target.id, target_key, &c.key, &plain)
            .map_err(|_| bad())?;
        entry.value = Value::String(resealed);
    }
    Ok(entry)
}

/// Phase 2. The copy is sealed, so its chain grew by this job alone: its
/// head says how many entries a cut-short run linked already.
async fn relink_data_chain(
    run: &mut Run<'_>,
    params: &Params,
    summary: &Summary,
    data: &dyn TenantData,
    state: &State,
) -> JobResult<()> {
    let source = summary.header.tenant_id;
    let head = data.audit_head().await?.map_or(0, |(seq, _)| seq);
    let mut skip = u64::try_from(head - state.data_head).unwrap_or(0);
    let total = *summary.header.counts.get("audit").unwrap_or(&0);
    let (mut lines, _) = Lines::open(&params.file).await.map_err(checked)?;
    let mut batch = Restore::default();
    let mut linked = 0u64;
    while let Some((no, text)) = lines.next().await.map_err(checked)? {
        let Item::Audit(a) =
            portable::parse_item(no, &text, source).map_err(|e| JobError::Fatal(e.to_string()))?
        else {
            continue;
        };
        if a.chain != AuditChain::Data {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        batch.relink.push(a.relinked());
        linked += 1;
        if batch.relink.len() >= BATCH {
            data.restore(&batch).await?;
            batch = Restore::default();
            run.set_progress(0.8 + 0.1 * linked as f64 / total.max(1) as f64);
            tokio::task::yield_now().await;
        }
    }
    // The copy's record of the import itself ends the phase (skip > 0 here
    // means it was written by the run that was cut short).
    if skip == 0 {
        batch.append = Some(run.audit("tenant.import", format!("jobs/{}", run.job.id)));
    }
    data.restore(&batch).await?;
    Ok(())
}

/// Phase 3: the control chain, request counts, the tenant's fields and the
/// import's own entry, each batch with its checkpoint.
async fn finish_control(
    run: &mut Run<'_>,
    params: &Params,
    summary: &Summary,
    target: &Tenant,
    state: &mut State,
) -> JobResult<()> {
    let source = summary.header.tenant_id;
    let (mut lines, _) = Lines::open(&params.file).await.map_err(checked)?;
    let mut step = ControlImport::default();
    let mut last = state.line;
    while let Some((no, text)) = lines.next().await.map_err(checked)? {
        if no <= state.line {
            continue;
        }
        last = no;
        match portable::parse_item(no, &text, source).map_err(|e| JobError::Fatal(e.to_string()))? {
            Item::Audit(a) if a.chain == AuditChain::Control => step.relink.push(a.relinked()),
            Item::RequestCount(c) => step.counts.push((c.date, c.requests)),
            _ => continue,
        }
        if step.relink.len() + step.counts.len() >= BATCH {
            state.line = last;
            commit_control(run, target, json!(state), &step).await?;
            step = ControlImport::default();
        }
    }
    state.line = last;
    if let Some(t) = &summary.tenant {
        let mut fields = target.clone();
        fields.name = t.name.clone();
        fields.metadata = t.metadata.clone();
        fields.branding = t.branding.clone();
        step.fields = Some(fields);
    }
    step.audit = Some(run.audit(
        "tenant.import",
        format!(
            "tenants/{}/jobs/{} from tenant {source}",
            target.id, run.job.id
        ),
    ));
    commit_control(run, target, json!({"phase": "done"}), &step).await?;
    Ok(())
}

/// One control-store step of the import, committed together with the
/// job's new `state` (refused if this worker lost the job).
async fn commit_control(
    run: &Run<'_>,
    target: &Tenant,
    state: Value,
    step: &ControlImport,
) -> Result<(), tenantry::store::StoreError> {
    let s = run.services;
    s.core
        .store
        .import_control(
            target,
            run.job.id,
            &run.worker,
            s.core.clock.now(),
            &state,
            step,
        )
        .await
}

/// Removes what phase 1 wrote: the tenant is empty again, as before the import.
async fn undo(
    run: &Run<'_>,
    summary: &Summary,
    t: &Tenant,
    data: &dyn TenantData,
) -> JobResult<()> {
    run.services
        .core
        .store
        .undo_restore(t, &summary.users, &summary.config_keys)
        .await?;
    data.clear().await?;
    data.unseal().await?;
    Ok(())
}

fn checked(e: Checked) -> JobError {
    match e {
        Checked::Line(e) => JobError::Fatal(format!("invalid import file: {e}")),
        Checked::Job(e) => e,
    }
}
